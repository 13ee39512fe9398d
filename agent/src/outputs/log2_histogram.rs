//! A Prometheus collector for per-user histograms whose buckets are kept
//! elsewhere (in BPF maps, as log2 buckets) and handed over as counts: the
//! scheduler's run-queue wait and D-state histograms.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Log2 buckets as the BPF side counts them: `counts[i]` is the number of
/// episodes with a duration `d` in microseconds such that
/// `2^(i-1) < d <= 2^i` (`counts[0]`: `d <= 1 µs`).
pub const LOG2_SLOTS: usize = 36;

/// The first exported upper bound is `2^FIRST_EXPORTED` µs (~1 ms): finer
/// buckets would multiply series without helping anyone find a 10 s stall.
pub const FIRST_EXPORTED: usize = 10;

#[derive(Debug, Clone, Default)]
struct Entry {
    counts: Vec<u64>,
    sum_seconds: f64,
}

/// One histogram family with a `user` label. Clones share the counts (one
/// clone is registered, the other fed).
#[derive(Debug, Clone)]
pub struct Log2Histograms {
    desc: Desc,
    name: String,
    help: String,
    per_user: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl Log2Histograms {
    pub fn new(name: &str, help: &str) -> prometheus::Result<Self> {
        Ok(Log2Histograms {
            desc: Desc::new(
                name.to_string(),
                help.to_string(),
                vec!["user".to_string()],
                HashMap::new(),
            )?,
            name: name.to_string(),
            help: help.to_string(),
            per_user: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Replaces a user's histogram with cumulative-since-start log2 counts.
    pub fn set(&self, user: &str, counts: &[u64], sum_seconds: f64) {
        if let Ok(mut m) = self.per_user.lock() {
            m.insert(
                user.to_string(),
                Entry {
                    counts: counts.iter().copied().take(LOG2_SLOTS).collect(),
                    sum_seconds,
                },
            );
        }
    }

    pub fn remove(&self, user: &str) {
        if let Ok(mut m) = self.per_user.lock() {
            m.remove(user);
        }
    }

    fn histogram(e: &Entry) -> Histogram {
        let mut buckets = Vec::new();
        let mut cumulative = 0u64;
        for (i, c) in e.counts.iter().enumerate() {
            cumulative += c;
            if i >= FIRST_EXPORTED {
                let mut b = Bucket::default();
                b.set_upper_bound((1u64 << i) as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
        }
        let mut h = Histogram::default();
        h.set_sample_count(cumulative);
        h.set_sample_sum(e.sum_seconds);
        h.set_bucket(buckets);
        h
    }
}

impl Collector for Log2Histograms {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(m) = self.per_user.lock() else {
            return Vec::new();
        };
        if m.is_empty() {
            return Vec::new();
        }
        let mut mf = MetricFamily::default();
        mf.set_name(self.name.clone());
        mf.set_help(self.help.clone());
        mf.set_field_type(MetricType::HISTOGRAM);
        let metrics = m
            .iter()
            .map(|(user, e)| {
                let mut label = LabelPair::default();
                label.set_name("user".to_string());
                label.set_value(user.clone());
                let mut metric = Metric::default();
                metric.set_label(vec![label]);
                metric.set_histogram(Self::histogram(e));
                metric
            })
            .collect();
        mf.set_metric(metrics);
        vec![mf]
    }
}
