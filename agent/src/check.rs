//! `t3pressure check`: what this host supports.
use std::process::ExitCode;

pub fn main(_args: crate::cli::CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("t3pressure check is not built yet")
}
