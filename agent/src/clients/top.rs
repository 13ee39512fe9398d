//! `t3pressure top` (placeholder until the TUI lands).
use std::process::ExitCode;

pub fn main(_args: crate::cli::TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("t3pressure top is not built yet")
}
