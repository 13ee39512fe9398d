//! Live discovery of watched units: an inotify watch on every directory of
//! the cgroup tree above the units (not inside them), matching new directory
//! names against the unit glob. A slow safety rescan catches anything inotify
//! missed (queue overflow), it is not the mechanism.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use globset::{Glob, GlobMatcher};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;

use crate::model::sample::Unit;

/// A unit appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Unit),
    Removed(Unit),
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("invalid unit glob {glob:?}: {source}")]
    Glob {
        glob: String,
        source: globset::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inotify: {0}")]
    Inotify(std::io::Error),
}

/// Undoes systemd's unit name escaping (`\x2d` -> `-`), see
/// systemd.unit(5) "String Escaping"; invalid escapes are kept as they are.
pub fn unescape(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = bytes
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user label: the template instance (`t3-serve@alice.service` ->
/// `alice`), unescaped. Without `@` the name minus its suffix is used.
pub fn user_of(unit_name: &str) -> String {
    let stem = unit_name
        .rsplit_once('.')
        .map(|(s, _)| s)
        .unwrap_or(unit_name);
    let instance = stem.split_once('@').map(|(_, i)| i).unwrap_or(stem);
    unescape(instance)
}

/// Matches directory names and builds `Unit`s; pure apart from `stat`.
#[derive(Debug, Clone)]
pub struct UnitMatcher {
    root: PathBuf,
    glob: GlobMatcher,
}

impl UnitMatcher {
    pub fn new(root: &Path, glob: &str) -> Result<Self, DiscoveryError> {
        let glob = Glob::new(glob)
            .map_err(|source| DiscoveryError::Glob {
                glob: glob.to_string(),
                source,
            })?
            .compile_matcher();
        Ok(UnitMatcher {
            root: root.to_path_buf(),
            glob,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn matches(&self, name: &OsStr) -> bool {
        self.glob.is_match(Path::new(name))
    }

    /// The unit for a matching directory; `None` if it vanished meanwhile.
    pub fn unit_at(&self, path: &Path) -> Option<Unit> {
        let meta = std::fs::metadata(path).ok()?;
        let name = path.file_name()?.to_string_lossy().into_owned();
        let level = path
            .strip_prefix(&self.root)
            .map(|rel| rel.components().count())
            .unwrap_or(0);
        Some(Unit {
            user: user_of(&name),
            name,
            path: path.to_path_buf(),
            cgroup_id: meta.ino(),
            level: u32::try_from(level).unwrap_or(u32::MAX),
        })
    }

    /// Walks `dir` (included if it matches): units found, and the non-unit
    /// directories visited (the ones to watch). Unit subtrees are not
    /// entered: their child cgroups belong to the unit.
    pub fn scan(&self, dir: &Path) -> (Vec<Unit>, Vec<PathBuf>) {
        let mut units = Vec::new();
        let mut dirs = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if d != self.root && d.file_name().is_some_and(|n| self.matches(n)) {
                units.extend(self.unit_at(&d));
                continue;
            }
            dirs.push(d.clone());
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        (units, dirs)
    }
}

/// Directory events worth a look in a watched (non-unit) directory.
fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::ONLYDIR
}

/// The discovery state: known units and watched directories.
struct Watcher {
    matcher: UnitMatcher,
    watches: Watches,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    units: BTreeMap<PathBuf, Unit>,
    tx: mpsc::UnboundedSender<Change>,
}

impl Watcher {
    fn watch_dirs(&mut self, dirs: Vec<PathBuf>) {
        for d in dirs {
            match self.watches.add(&d, watch_mask()) {
                Ok(wd) => {
                    self.by_wd.insert(wd, d);
                }
                // Removed between the scan and the watch: nothing to do.
                Err(e) if super::cgroupfs::is_vanished(&e) => {}
                Err(e) => tracing::warn!("cannot watch {}: {e}", d.display()),
            }
        }
    }

    fn add(&mut self, unit: Unit) {
        if !self.units.contains_key(&unit.path) {
            self.units.insert(unit.path.clone(), unit.clone());
            let _ = self.tx.send(Change::Added(unit));
        }
    }

    /// Everything at or below `path` that is known is gone.
    fn remove_below(&mut self, path: &Path) {
        let gone: Vec<PathBuf> = self
            .units
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in gone {
            if let Some(u) = self.units.remove(&p) {
                let _ = self.tx.send(Change::Removed(u));
            }
        }
        self.by_wd.retain(|_, p| !p.starts_with(path) || p == path);
    }

    /// A new directory (or one moved in): scan it, watch what is not a unit.
    fn appeared(&mut self, path: &Path) {
        let (units, dirs) = self.matcher.scan(path);
        self.watch_dirs(dirs);
        for u in units {
            self.add(u);
        }
    }

    /// Full rescan, diffed against what is known (safety net).
    fn rescan(&mut self) {
        let (units, dirs) = self.matcher.scan(&self.matcher.root.clone());
        let known: Vec<PathBuf> = self.by_wd.values().cloned().collect();
        let new_dirs = dirs.into_iter().filter(|d| !known.contains(d)).collect();
        self.watch_dirs(new_dirs);
        let present: BTreeMap<PathBuf, Unit> =
            units.into_iter().map(|u| (u.path.clone(), u)).collect();
        let gone: Vec<PathBuf> = self
            .units
            .iter()
            .filter(|(p, u)| present.get(*p).is_none_or(|n| n.cgroup_id != u.cgroup_id))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            if let Some(u) = self.units.remove(&p) {
                let _ = self.tx.send(Change::Removed(u));
            }
        }
        for u in present.into_values() {
            self.add(u);
        }
    }
}

/// Starts discovery: the initial units are sent as `Added` before this
/// returns, later changes as they happen. The task ends when the receiver
/// is dropped.
pub fn spawn(
    root: &Path,
    glob: &str,
    rescan_every: Duration,
) -> Result<mpsc::UnboundedReceiver<Change>, DiscoveryError> {
    let matcher = UnitMatcher::new(root, glob)?;
    let inotify = Inotify::init().map_err(DiscoveryError::Inotify)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut w = Watcher {
        matcher,
        watches: inotify.watches(),
        by_wd: HashMap::new(),
        units: BTreeMap::new(),
        tx,
    };
    w.watches
        .add(root, watch_mask())
        .map_err(|source| DiscoveryError::Watch {
            path: root.to_path_buf(),
            source,
        })?;
    // Watches first, then the scan: a unit created in between is seen twice
    // at worst (deduplicated by path), never missed.
    w.rescan();
    let mut stream = inotify
        .into_event_stream(vec![0u8; 64 * 1024])
        .map_err(DiscoveryError::Inotify)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(rescan_every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = w.tx.closed() => break,
                _ = tick.tick() => w.rescan(),
                ev = stream.next() => match ev {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!("inotify read failed: {e}; rescanning");
                        w.rescan();
                    }
                    Some(Ok(ev)) => handle(&mut w, ev),
                },
            }
        }
    });
    Ok(rx)
}

fn handle(w: &mut Watcher, ev: inotify::Event<std::ffi::OsString>) {
    if ev.mask.contains(EventMask::Q_OVERFLOW) {
        tracing::warn!("inotify queue overflowed; rescanning the cgroup tree");
        w.rescan();
        return;
    }
    if ev.mask.contains(EventMask::IGNORED) {
        w.by_wd.remove(&ev.wd);
        return;
    }
    let Some(parent) = w.by_wd.get(&ev.wd).cloned() else {
        return;
    };
    if ev.mask.contains(EventMask::DELETE_SELF) {
        w.remove_below(&parent);
        return;
    }
    let Some(name) = ev.name else { return };
    if !ev.mask.contains(EventMask::ISDIR) {
        return;
    }
    let path = parent.join(&name);
    if ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        w.appeared(&path);
    } else if ev
        .mask
        .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
    {
        w.remove_below(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_systemd_names() {
        assert_eq!(
            unescape(r"system-t3\x2dserve.slice"),
            "system-t3-serve.slice"
        );
        assert_eq!(unescape(r"a\x2"), r"a\x2", "short escape kept");
        assert_eq!(unescape(r"a\xzz"), r"a\xzz", "bad hex kept");
        assert_eq!(user_of("t3-serve@alice.service"), "alice");
        assert_eq!(user_of(r"t3-serve@j\x2ddoe.service"), "j-doe");
        assert_eq!(user_of(r"t3-serve@a\x40b.service"), "a@b");
    }

    #[test]
    fn glob_matches_names_only() {
        let m = UnitMatcher::new(Path::new("/x"), "t3-serve@*.service").expect("glob");
        assert!(m.matches(OsStr::new("t3-serve@alice.service")));
        assert!(!m.matches(OsStr::new("t3-serve.service")));
        assert!(!m.matches(OsStr::new("t3-serve@alice.scope")));
        assert!(UnitMatcher::new(Path::new("/x"), "[").is_err());
    }
}
