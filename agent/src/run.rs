//! `t3pressure run`: wires sources, model, detectors, actions and outputs.
use std::process::ExitCode;

pub fn main(args: crate::cli::RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.effective_config()?;
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::bail!("t3pressure run is not built yet")
}
