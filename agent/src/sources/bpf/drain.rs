//! Drains the episode and OOM ring buffers on the tokio runtime into a
//! channel of decoded events.

use std::time::{Duration, SystemTime};

use agent_common::{EpisodeEvent, OomEvent};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::{clock::mono_to_wall, BpfError, Episode, EpisodeKind};

/// Capacity of the channel; the ring buffers absorb bursts beyond it.
const CHANNEL: usize = 4096;

/// One `oom:mark_victim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomVictim {
    /// The unit of the task that ran the OOM killer (the charging task in a
    /// memcg OOM); `None` if it was in no watched unit.
    pub unit_cgroup_id: Option<u64>,
    /// Cgroup id of that task.
    pub cgroup_id: u64,
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    pub total_vm: u64,
    /// Bytes.
    pub anon_rss: u64,
    pub file_rss: u64,
    pub shmem_rss: u64,
    pub at: SystemTime,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BpfEvent {
    /// A finished wait at least as long as the threshold.
    Episode(Episode),
    Oom(OomVictim),
}

fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Decodes a ring buffer record; `None` for a short or unknown record.
pub(super) fn decode_episode(bytes: &[u8]) -> Option<Episode> {
    if bytes.len() < size_of::<EpisodeEvent>() {
        return None;
    }
    // SAFETY: length checked; EpisodeEvent is plain integers, read unaligned.
    let ev: EpisodeEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(Episode {
        unit_cgroup_id: ev.unit_cgroup_id,
        tid: ev.tid,
        tgid: ev.tgid,
        comm: super::comm_of(ev.tid),
        kind: EpisodeKind::from_raw(ev.kind)?,
        start_mono_ns: ev.start_ns,
        start: mono_to_wall(ev.start_ns),
        duration: Duration::from_nanos(ev.duration_ns),
        ongoing: false,
    })
}

pub(super) fn decode_oom(bytes: &[u8]) -> Option<OomVictim> {
    if bytes.len() < size_of::<OomEvent>() {
        return None;
    }
    // SAFETY: length checked; OomEvent is plain integers, read unaligned.
    let ev: OomEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(OomVictim {
        unit_cgroup_id: (ev.unit_cgroup_id != 0).then_some(ev.unit_cgroup_id),
        cgroup_id: ev.cgroup_id,
        pid: ev.pid,
        uid: ev.uid,
        comm: comm_str(&ev.comm),
        total_vm: ev.total_vm_kb.saturating_mul(1024),
        anon_rss: ev.anon_rss_kb.saturating_mul(1024),
        file_rss: ev.file_rss_kb.saturating_mul(1024),
        shmem_rss: ev.shmem_rss_kb.saturating_mul(1024),
        at: mono_to_wall(ev.ts_ns),
    })
}

fn register(rb: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, BpfError> {
    // SAFETY: the ring buffer owns its map fd for as long as it lives, and
    // the AsyncFd owns the ring buffer.
    unsafe { AsyncFd::register_with_interest(rb, Interest::READABLE) }
        .map_err(|e| BpfError::Poll(e.into_parts().1))
}

/// Spawns the drain task; it ends when the receiver is dropped.
pub(super) fn spawn(
    episodes: RingBuf<MapData>,
    ooms: RingBuf<MapData>,
) -> Result<mpsc::Receiver<BpfEvent>, BpfError> {
    let mut episodes = register(episodes)?;
    let mut ooms = register(ooms)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                guard = episodes.readable_mut() => {
                    let Ok(mut guard) = guard else { break };
                    let rb = guard.get_inner_mut();
                    while let Some(item) = rb.next() {
                        if let Some(e) = decode_episode(&item) {
                            batch.push(BpfEvent::Episode(e));
                        }
                    }
                    guard.clear_ready();
                }
                guard = ooms.readable_mut() => {
                    let Ok(mut guard) = guard else { break };
                    let rb = guard.get_inner_mut();
                    while let Some(item) = rb.next() {
                        if let Some(o) = decode_oom(&item) {
                            batch.push(BpfEvent::Oom(o));
                        }
                    }
                    guard.clear_ready();
                }
                () = tx.closed() => break,
            }
            for ev in batch {
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_records_are_skipped() {
        assert_eq!(decode_episode(&[0; 8]), None);
        assert_eq!(decode_oom(&[]), None);
    }

    #[test]
    fn an_oom_record_decodes_to_bytes_and_comm() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"node");
        let ev = OomEvent {
            ts_ns: 1,
            cgroup_id: 7,
            unit_cgroup_id: 0,
            total_vm_kb: 4,
            anon_rss_kb: 2,
            file_rss_kb: 1,
            shmem_rss_kb: 0,
            pid: 42,
            uid: 1000,
            comm,
        };
        // SAFETY: reading the bytes of a repr(C) value without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((&ev as *const OomEvent).cast::<u8>(), size_of::<OomEvent>())
        };
        let o = decode_oom(bytes).expect("decodes");
        assert_eq!(
            (o.pid, o.uid, o.comm.as_str(), o.anon_rss, o.unit_cgroup_id),
            (42, 1000, "node", 2048, None)
        );
    }

    #[test]
    fn an_unknown_kind_is_skipped() {
        let ev = EpisodeEvent {
            kind: 3,
            ..Default::default()
        };
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const EpisodeEvent).cast::<u8>(),
                size_of::<EpisodeEvent>(),
            )
        };
        assert_eq!(decode_episode(bytes), None);
    }
}
