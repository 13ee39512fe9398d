//! Read errors of the sampler: counted per file name
//! (`t3pressure_read_errors_total{file}`), logged once per (file, unit); a
//! missing optional file logged once per file name.

use std::collections::{BTreeMap, HashSet};

use super::cgroupfs::ReadError;

/// Counts read errors per file name and keeps the log quiet: each
/// (file, unit) error is logged once, each missing file name once.
#[derive(Debug, Default)]
pub struct ReadErrors {
    counts: BTreeMap<String, u64>,
    logged: HashSet<(String, String)>,
    missing_logged: HashSet<String>,
}

impl ReadErrors {
    pub fn record(&mut self, unit: &str, err: &ReadError) {
        let file = err.file_name();
        *self.counts.entry(file.clone()).or_default() += 1;
        if self.logged.insert((file, unit.to_string())) {
            tracing::warn!(
                unit,
                "{err} (counted in t3pressure_read_errors_total; logged once)"
            );
        }
    }

    /// Files that do not exist on this host or for this cgroup (controller
    /// off, PSI disabled, older kernel): said once per file name, in one
    /// line, then skipped silently.
    pub fn missing(&mut self, unit: &str, files: &[&str]) {
        let new: Vec<&str> = files
            .iter()
            .copied()
            .filter(|f| self.missing_logged.insert((*f).to_string()))
            .collect();
        if !new.is_empty() {
            tracing::info!(
                unit,
                "missing (controller off, PSI disabled or older kernel), skipped wherever \
                 missing: {}",
                new.join(", ")
            );
        }
    }

    /// Total errors per file name since start.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// A unit stopped: its errors may be logged again if it comes back.
    pub fn forget_unit(&mut self, unit: &str) {
        self.logged.retain(|(_, u)| u != unit);
    }
}
