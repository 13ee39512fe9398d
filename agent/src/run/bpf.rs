//! Glue between the eBPF programs and the run loop: loading (or saying why
//! not), keeping the watched-units map in step with discovery, turning
//! scheduler episodes into the stall detector's input and the snapshot's
//! episode list, OOM victims into events (memcg or global), and the kernel
//! histograms into metrics.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::config::Config;
use crate::detectors::stall::{Episode as StallEpisode, EpisodeKind as StallKind, ServeWait};
use crate::model::event::{unix_seconds, OomKill, OomScope};
use crate::model::sample::Unit;
use crate::model::state::Model;
use crate::outputs::log2_histogram::LOG2_SLOTS;
use crate::outputs::metrics::{Metrics, SchedHistogram};
use crate::outputs::snapshot::{EpisodeInfo, Snapshot};
use crate::sources::bpf::monotonic_ns;
use crate::sources::bpf::{
    Bpf, BpfConfig, BpfEvent, Episode, EpisodeKind, OomVictim, TaskWalk, BUCKETS,
};
use crate::sources::cgroupfs::read_memory_events;

/// Finished episodes kept per unit for the snapshot.
const RECENT_EPISODES: usize = 32;
/// Episodes waiting for the next detector tick, per unit (bounded so a
/// storm of short waits cannot grow memory).
const PENDING_EPISODES: usize = 4096;

/// The loaded programs plus per-unit buffers.
pub struct BpfFeed {
    bpf: Bpf,
    threshold: Duration,
    /// Finished episodes since the last detector tick, by unit cgroup id.
    pending: BTreeMap<u64, Vec<Episode>>,
    /// Recent finished episodes, newest first, by unit cgroup id.
    recent: BTreeMap<u64, VecDeque<Episode>>,
    /// Per unit, the `memory.events` `oom` count already accounted for:
    /// read when the unit is watched, advanced by each memcg OOM kill.
    oom_accounted: BTreeMap<u64, u64>,
}

/// Loads and attaches the programs unless `--no-bpf`; the error says why
/// BPF is off, for the log, the snapshot and `t3pressure_bpf_loaded 0`.
pub fn load(config: &Config) -> Result<(BpfFeed, tokio::sync::mpsc::Receiver<BpfEvent>), String> {
    if config.no_bpf {
        return Err("disabled by --no-bpf".into());
    }
    let threshold = Duration::from_millis(config.episode_threshold_ms);
    let mut bpf = Bpf::load(&BpfConfig {
        episode_threshold: threshold,
        ..BpfConfig::default()
    })
    .map_err(|e| format!("{e} (`t3pressure check` says how to fix it)"))?;
    match bpf.cgroup_walk() {
        Ok(w) => tracing::info!(
            "BPF unit check: direct cgroup loads from the task (BTF offsets {:?})",
            w.as_global()
        ),
        Err(why) => tracing::info!(
            "BPF unit check: bpf_get_current_ancestor_cgroup_id (direct loads: {why})"
        ),
    }
    match bpf.oom() {
        Ok(how) => tracing::info!("OOM kills traced with {}", how.describe()),
        Err(why) => tracing::warn!(
            "OOM program not attached, OOM kills show only in memory.events \
             (no oom_kill events): {why}"
        ),
    }
    let rx = bpf.events().map_err(|e| e.to_string())?;
    Ok((
        BpfFeed {
            bpf,
            threshold,
            pending: BTreeMap::new(),
            recent: BTreeMap::new(),
            oom_accounted: BTreeMap::new(),
        },
        rx,
    ))
}

impl BpfFeed {
    pub fn watch(&mut self, unit: &Unit) {
        let oom = read_memory_events(&unit.path)
            .ok()
            .flatten()
            .map_or(0, |e| e.oom);
        self.oom_accounted.insert(unit.cgroup_id, oom);
        if let Err(e) = self.bpf.watch_unit(unit) {
            tracing::error!(user = %unit.user, "cannot trace this unit's tasks: {e}");
        }
    }

    pub fn unwatch(&mut self, unit: &Unit) {
        self.pending.remove(&unit.cgroup_id);
        self.recent.remove(&unit.cgroup_id);
        self.oom_accounted.remove(&unit.cgroup_id);
        if let Err(e) = self.bpf.unwatch_unit(unit) {
            tracing::warn!(user = %unit.user, "cannot untrace this unit: {e}");
        }
    }

    /// The unit's serve process as the model knows it now (see
    /// `Bpf::set_serve`): only its main thread gets idle marks.
    pub fn note_serve(&mut self, unit: &Unit, serve_pid: Option<i32>) {
        let tgid = serve_pid.and_then(|p| u32::try_from(p).ok());
        if let Err(e) = self.bpf.set_serve(unit.cgroup_id, tgid) {
            tracing::warn!(user = %unit.user, "cannot mark this unit's serve for the kernel side: {e}");
        }
    }

    /// A finished episode from the ring buffer.
    pub fn episode(&mut self, e: Episode) {
        let pending = self.pending.entry(e.unit_cgroup_id).or_default();
        if pending.len() < PENDING_EPISODES {
            pending.push(e.clone());
        }
        let recent = self.recent.entry(e.unit_cgroup_id).or_default();
        recent.push_front(e);
        recent.truncate(RECENT_EPISODES);
    }

    /// Waits in progress in every watched unit and the main threads' wait
    /// totals: one walk of the kernel's task map per sampling pass, shared
    /// by all units.
    pub fn walk(&self) -> TaskWalk {
        self.bpf.walk_tasks(monotonic_ns(), self.threshold)
    }

    /// The serve main thread's wait total, for the stall detector's bridges.
    pub fn serve_wait(unit: &Unit, serve_pid: Option<i32>, walk: &TaskWalk) -> Option<ServeWait> {
        let tid = serve_pid.and_then(|p| u32::try_from(p).ok())?;
        walk.main_thread_waits
            .iter()
            .find(|w| w.tid == tid && w.unit_cgroup_id == unit.cgroup_id)
            .map(|w| ServeWait {
                tid,
                waited_s: w.waited_ns as f64 / 1e9,
                slept_s: w.slept_ns as f64 / 1e9,
                at_s: walk.at_mono_ns as f64 / 1e9,
                idle_at_s: (w.idle_ns != 0).then(|| w.idle_ns as f64 / 1e9),
            })
    }

    /// The serve main thread's episodes for the stall detector: the
    /// finished ones since the last call and, from `ongoing`, the ones still
    /// in progress. The main thread of the serve process has tid == pid.
    pub fn serve_episodes(
        &mut self,
        unit: &Unit,
        serve_pid: Option<i32>,
        ongoing: &[Episode],
    ) -> Vec<StallEpisode> {
        let pending = self.pending.remove(&unit.cgroup_id).unwrap_or_default();
        let Some(tid) = serve_pid.and_then(|p| u32::try_from(p).ok()) else {
            return Vec::new();
        };
        let ongoing = ongoing
            .iter()
            .filter(|e| e.unit_cgroup_id == unit.cgroup_id)
            .cloned();
        pending
            .into_iter()
            .chain(ongoing)
            .filter(|e| e.tid == tid)
            .map(|e| stall_episode(&e))
            .collect()
    }

    /// Per-user scheduler histograms, read from the kernel's per-CPU maps.
    pub fn export_histograms(&self, model: &Model, metrics: &Metrics) {
        for u in model.units.values() {
            if let Some(h) = self.bpf.histograms(u.unit.cgroup_id) {
                let (counts, sum) = to_usec_slots(&h.runqueue);
                metrics.set_sched_histogram(
                    SchedHistogram::RunqueueWait,
                    &u.unit.user,
                    &counts,
                    sum,
                );
                let (counts, sum) = to_usec_slots(&h.blocked);
                metrics.set_sched_histogram(SchedHistogram::Blocked, &u.unit.user, &counts, sum);
            }
        }
    }

    /// The snapshot's episodes per unit: in progress first, then recent.
    pub fn annotate(&self, snap: &mut Snapshot, model: &Model, ongoing: &[Episode]) {
        for info in &mut snap.units {
            let Some(state) = model.units.values().find(|s| s.unit.user == info.user) else {
                continue;
            };
            let id = state.unit.cgroup_id;
            info.episodes = ongoing
                .iter()
                .filter(|e| e.unit_cgroup_id == id)
                .chain(self.recent.get(&id).into_iter().flatten())
                .map(episode_info)
                .collect();
        }
    }
}

fn stall_episode(e: &Episode) -> StallEpisode {
    let start = unix_seconds(e.start);
    StallEpisode {
        kind: match e.kind {
            EpisodeKind::Runqueue => StallKind::Runqueue,
            EpisodeKind::Blocked => StallKind::Blocked,
        },
        start,
        end: (!e.ongoing).then_some(start + e.duration.as_secs_f64()),
    }
}

fn episode_info(e: &Episode) -> EpisodeInfo {
    EpisodeInfo {
        tid: i32::try_from(e.tid).unwrap_or(-1),
        tgid: i32::try_from(e.tgid).unwrap_or(-1),
        comm: e.comm.clone(),
        kind: match e.kind {
            EpisodeKind::Runqueue => "runqueue".into(),
            EpisodeKind::Blocked => "blocked".into(),
        },
        start: unix_seconds(e.start),
        duration_s: e.duration.as_secs_f64(),
        ongoing: e.ongoing,
    }
}

/// The kernel counts waits in log2 nanosecond buckets (`[2^i, 2^(i+1))`
/// ns); the exported histogram has log2 microsecond slots (`(2^(j-1), 2^j]`
/// µs). Bucket i's upper bound 2^(i+1) ns is at most 2^(i-8) µs, so it goes
/// to slot i-8: never reported as shorter than it was. The kernel keeps no
/// sum; it is estimated at each bucket's middle (1.5 * 2^i ns).
pub fn to_usec_slots(ns_buckets: &[u64; BUCKETS]) -> (Vec<u64>, f64) {
    let mut slots = vec![0u64; LOG2_SLOTS];
    let mut sum = 0.0;
    for (i, &n) in ns_buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let j = i.saturating_sub(8).min(LOG2_SLOTS - 1);
        slots[j] += n;
        sum += n as f64 * 1.5 * (1u64 << i.min(63)) as f64 / 1e9;
    }
    (slots, sum)
}

/// An OOM victim as an event. Memcg when the unit's `memory.events` `oom`
/// (the unit hit MemoryMax) went past what earlier kills accounted for:
/// the kernel bumps it before it picks the victim, so the sampler may have
/// seen the new value before this event arrives, and comparing with the
/// last sample would call a memcg kill global. `oom_kill` is no help: it
/// moves for any kill of a task in the unit, global ones included.
impl BpfFeed {
    pub fn oom_kill(&mut self, v: &OomVictim, model: &Model) -> OomKill {
        let state = v
            .unit_cgroup_id
            .and_then(|id| model.units.values().find(|s| s.unit.cgroup_id == id));
        let scope = match state {
            Some(s) => {
                let accounted = self.oom_accounted.entry(s.unit.cgroup_id).or_insert(0);
                match read_memory_events(&s.unit.path) {
                    Ok(Some(now)) if now.oom > *accounted => {
                        *accounted = now.oom;
                        OomScope::Memcg
                    }
                    _ => OomScope::Global,
                }
            }
            None => OomScope::Global,
        };
        let pid = i32::try_from(v.pid).unwrap_or(-1);
        let mut kill = OomKill {
            user: state.map(|s| s.unit.user.clone()),
            pid,
            comm: v.comm.clone(),
            uid: v.uid,
            anon_rss: v.anon_rss,
            file_rss: v.file_rss,
            shmem_rss: v.shmem_rss,
            scope,
        };
        // The raw tracepoint hands over the pid (and comm and uid with the
        // task prototype) but no rss: take what the kernel did not give
        // from the last sample of the process.
        if v.anon_rss == 0 && v.file_rss == 0 && v.shmem_rss == 0 {
            let sampled = model
                .units
                .values()
                .filter_map(|s| s.latest.as_ref())
                .flat_map(|l| l.procs.iter())
                .find(|p| p.pid == pid);
            if let Some(p) = sampled {
                if kill.comm.is_empty() {
                    kill.comm = p.comm.to_string();
                    kill.uid = p.uid;
                }
                kill.anon_rss = p.rss_anon;
                kill.file_rss = p.rss_file;
                kill.shmem_rss = p.rss_shmem;
            }
        }
        kill
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_buckets_map_to_usec_slots_without_underreporting() {
        let mut b = [0u64; BUCKETS];
        b[10] = 3; // [1.024, 2.048) µs -> slot 2 (<= 4 µs)
        b[33] = 1; // [8.6, 17.2) s -> slot 25 (<= 33.5 s)
        let (slots, sum) = to_usec_slots(&b);
        assert_eq!(slots[2], 3);
        assert_eq!(slots[25], 1);
        assert_eq!(slots.iter().sum::<u64>(), 4);
        // Each upper bound covers the bucket's upper bound.
        assert!(f64::from(1u32 << 2) >= 2048.0 / 1000.0);
        assert!((1u64 << 25) as f64 >= (1u64 << 34) as f64 / 1000.0);
        assert!(sum > 12.0 && sum < 13.0, "{sum}");
    }
}
