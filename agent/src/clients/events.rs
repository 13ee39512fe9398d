//! `t3pressure events` (placeholder until the event log lands).
use std::process::ExitCode;

pub fn main(_args: crate::cli::EventsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("t3pressure events is not built yet")
}
