//! Test helper: appends numbered events to an event log as fast as it can,
//! until killed; the crash test SIGKILLs it mid-stream.
//!
//! Usage: `t3-eventlog-writer <state_dir>`; prints `ready` after the first
//! event is written.

use std::io::Write;
use std::path::PathBuf;

use t3pressure::config::EventLogConfig;
use t3pressure::model::event::{Event, EventBody};
use t3pressure::outputs::eventlog::EventLog;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: t3-eventlog-writer <state_dir>"))?,
    );
    // Small files so that the stream also rotates while it is killed.
    let config = EventLogConfig {
        max_file_bytes: 64 * 1024,
        keep_files: 1000,
    };
    let mut log = EventLog::open(&dir, &config)?;
    for seq in 0u64.. {
        let e = Event::new(
            seq as f64,
            EventBody::AgentStop {
                reason: format!("seq {seq}"),
            },
        );
        log.append(&e)?;
        if seq == 0 {
            println!("ready");
            std::io::stdout().flush()?;
        }
    }
    Ok(())
}
