//! Unit-shaped test cgroups under the cgroup2 mount (and v1 memory cgroups
//! for the OOM test), removed in `Drop` even when the test fails, with
//! their processes killed first.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use t3pressure::model::sample::Unit;

/// Where cgroup2 is mounted: `/sys/fs/cgroup/unified` on hybrid hosts.
pub fn cgroup2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A directory tree of test cgroups; the whole tree goes away on drop.
pub struct TestCgroups {
    /// The top directory, e.g. `<root>/t3ptest-<pid>`.
    pub top: PathBuf,
    /// Directories created, in creation order (removed in reverse).
    dirs: Vec<PathBuf>,
}

impl TestCgroups {
    /// Creates `<parent>/<name>` (where `parent` is a cgroup root).
    pub fn new(parent: &Path, name: &str) -> TestCgroups {
        let top = parent.join(name);
        std::fs::create_dir(&top).unwrap_or_else(|e| panic!("mkdir {}: {e}", top.display()));
        TestCgroups {
            dirs: vec![top.clone()],
            top,
        }
    }

    /// Creates a child (relative path below `top`) and returns its path.
    pub fn child(&mut self, rel: &str) -> PathBuf {
        let mut path = self.top.clone();
        for part in rel.split('/') {
            path.push(part);
            if !path.exists() {
                std::fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                self.dirs.push(path.clone());
            }
        }
        path
    }
}

fn pids_of(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                for pid in pids_of(dir) {
                    // SAFETY: plain kill; the pid is in our test cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("could not remove test cgroup {}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The `Unit` the agent would discover for a cgroup2 directory.
pub fn unit_at(path: &Path) -> Unit {
    let root = cgroup2_root();
    let meta = std::fs::metadata(path).expect("stat the unit cgroup");
    let rel = path
        .strip_prefix(&root)
        .expect("unit below the cgroup2 root");
    let name = path
        .file_name()
        .expect("unit dir name")
        .to_string_lossy()
        .into_owned();
    let user = name
        .strip_prefix("t3-serve@")
        .and_then(|s| s.strip_suffix(".service"))
        .unwrap_or(&name)
        .to_string();
    Unit {
        name,
        user,
        path: path.to_path_buf(),
        cgroup_id: meta.ino(),
        level: rel.components().count() as u32,
    }
}

/// The current process's v1 memory cgroup directory (hybrid hosts), if any.
pub fn own_memory_v1_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
        ctrl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'));
    dir.join("memory.limit_in_bytes").exists().then_some(dir)
}
