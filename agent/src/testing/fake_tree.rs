//! A builder for fake cgroup v2 and procfs trees in a temp dir, filled with
//! file contents captured from a real 6.1 kernel (see
//! `agent/fixtures/kernel-6.1/README.md`), in the manner of below's cgroupfs
//! tests. Layout: `<dir>/cgroup` (pass as `--cgroup-root`) and `<dir>/proc`
//! (pass as `--proc-root`). The directory is removed on drop.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! fixture {
    ($p:literal) => {
        include_str!(concat!("../../fixtures/kernel-6.1/", $p))
    };
}

/// The files of alice's captured unit (a 300 MiB anon process, no OOM).
const UNIT_FILES: &[(&str, &str)] = &[
    ("memory.pressure", fixture!("alice/memory.pressure")),
    ("io.pressure", fixture!("alice/io.pressure")),
    ("cpu.pressure", fixture!("alice/cpu.pressure")),
    ("memory.current", fixture!("alice/memory.current")),
    ("memory.max", fixture!("alice/memory.max")),
    ("memory.high", fixture!("alice/memory.high")),
    ("memory.peak", fixture!("alice/memory.peak")),
    ("memory.swap.current", fixture!("alice/memory.swap.current")),
    ("memory.swap.max", fixture!("alice/memory.swap.max")),
    ("memory.events", fixture!("alice/memory.events")),
    ("memory.stat", fixture!("alice/memory.stat")),
    ("cpu.stat", fixture!("alice/cpu.stat")),
    ("pids.current", fixture!("alice/pids.current")),
    ("cgroup.procs", ""),
];

const HOST_FILES: &[(&str, &str)] = &[
    ("pressure/memory", fixture!("proc/pressure/memory")),
    ("pressure/io", fixture!("proc/pressure/io")),
    ("pressure/cpu", fixture!("proc/pressure/cpu")),
    ("meminfo", fixture!("proc/meminfo")),
];

const PROC_STATUS: &str = fixture!("proc/pid/status");
const PROC_STAT: &str = fixture!("proc/pid/stat");

/// Where systemd puts template instances of `t3-serve@.service`.
pub const SLICE: &str = r"system.slice/system-t3\x2dserve.slice";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fake cgroup root and proc root. Panics on I/O errors: it is a test
/// helper, a failure must show where.
#[derive(Debug)]
pub struct FakeCgroupTree {
    dir: PathBuf,
}

impl Default for FakeCgroupTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCgroupTree {
    /// A new tree under the system temp dir.
    pub fn new() -> Self {
        Self::new_in(&std::env::temp_dir())
    }

    /// A new tree under `parent` (e.g. `/dev/shm` for a tmpfs).
    pub fn new_in(parent: &Path) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("t3p-fake-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let t = FakeCgroupTree { dir };
        mkdir(&t.root().join(SLICE));
        for (name, content) in HOST_FILES {
            write(&t.proc_root().join(name), content);
        }
        t
    }

    /// Pass as `--cgroup-root`.
    pub fn root(&self) -> PathBuf {
        self.dir.join("cgroup")
    }

    /// Pass as `--proc-root`.
    pub fn proc_root(&self) -> PathBuf {
        self.dir.join("proc")
    }

    /// The cgroup dir of `t3-serve@<user>.service`.
    pub fn unit_path(&self, user: &str) -> PathBuf {
        self.root()
            .join(SLICE)
            .join(format!("t3-serve@{user}.service"))
    }

    /// Creates `t3-serve@<user>.service` with realistic files and no
    /// processes; returns its path.
    pub fn unit(&self, user: &str) -> PathBuf {
        self.unit_named(&format!("t3-serve@{user}.service"))
    }

    /// Creates a unit dir with an exact (possibly escaped) name in the slice.
    pub fn unit_named(&self, dir_name: &str) -> PathBuf {
        let path = self.root().join(SLICE).join(dir_name);
        self.cgroup_at(&path);
        path
    }

    /// Creates a cgroup directory with the unit files at any path.
    pub fn cgroup_at(&self, path: &Path) {
        // Files first, then rename into place: discovery sees a complete dir.
        let tmp = self
            .dir
            .join(format!("tmp-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        mkdir(&tmp);
        for (name, content) in UNIT_FILES {
            write(&tmp.join(name), content);
        }
        if let Some(parent) = path.parent() {
            mkdir(parent);
        }
        fs::rename(&tmp, path).expect("fake tree: rename cgroup into place");
    }

    /// A nested child cgroup of a unit (e.g. `agents/a1`), with files.
    pub fn child_cgroup(&self, user: &str, rel: &str) -> PathBuf {
        let path = self.unit_path(user).join(rel);
        self.cgroup_at(&path);
        path
    }

    /// Sets a file of a unit.
    pub fn set(&self, user: &str, file: &str, content: &str) {
        write(&self.unit_path(user).join(file), content);
    }

    /// Removes a file of a unit (controller off, PSI disabled). Emptied
    /// first: a descriptor the agent keeps open then reads nothing, as on
    /// kernfs (ENODEV) — tmpfs would keep serving the old content.
    pub fn remove_file(&self, user: &str, file: &str) {
        let path = self.unit_path(user).join(file);
        let _ = fs::write(&path, "");
        fs::remove_file(path).expect("fake tree: remove file");
    }

    /// Stops a unit: its dir disappears.
    pub fn remove_unit(&self, user: &str) {
        fs::remove_dir_all(self.unit_path(user)).expect("fake tree: remove unit");
    }

    /// A fake process in a cgroup dir: /proc/<pid>/{status,statm,stat,cmdline,comm}
    /// from the captured process, with pid, ppid, comm and RssAnon replaced;
    /// the pid is appended to the cgroup's `cgroup.procs`.
    pub fn process(&self, cgroup: &Path, pid: i32, ppid: i32, comm: &str, anon_kb: u64) {
        self.set_process(pid, ppid, comm, anon_kb);
        let procs = cgroup.join("cgroup.procs");
        let mut text = fs::read_to_string(&procs).unwrap_or_default();
        text.push_str(&format!("{pid}\n"));
        write(&procs, &text);
    }

    /// Writes or rewrites the proc files of a process (e.g. to grow it).
    pub fn set_process(&self, pid: i32, ppid: i32, comm: &str, anon_kb: u64) {
        let dir = self.proc_root().join(pid.to_string());
        let status: String = PROC_STATUS
            .lines()
            .map(|l| match l.split_once(':').map(|(k, _)| k) {
                Some("Name") => format!("Name:\t{comm}"),
                Some("Pid") | Some("Tgid") => format!("{}:\t{pid}", &l[..l.find(':').unwrap_or(0)]),
                Some("PPid") => format!("PPid:\t{ppid}"),
                Some("RssAnon") => format!("RssAnon:\t{anon_kb:>8} kB"),
                _ => l.to_string(),
            })
            .map(|l| l + "\n")
            .collect();
        write(&dir.join("status"), &status);
        // statm in pages, consistent with the status written: resident =
        // anon + file + shmem, shared = file + shmem.
        let kb_of = |key: &str| -> u64 {
            PROC_STATUS
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let page_kb = crate::sources::procfs::page_size() / 1024;
        let shared = (kb_of("RssFile:") + kb_of("RssShmem:")) / page_kb;
        let resident = anon_kb / page_kb + shared;
        write(
            &dir.join("statm"),
            &format!(
                "{} {resident} {shared} 692 0 {resident} 0\n",
                resident + 2000
            ),
        );
        let after_comm = PROC_STAT.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let mut fields: Vec<String> = after_comm.split(' ').map(str::to_string).collect();
        if fields.len() > 1 {
            fields[1] = ppid.to_string();
        }
        write(
            &dir.join("stat"),
            &format!("{pid} ({comm}) {}", fields.join(" ")),
        );
        write(
            &dir.join("cmdline"),
            &format!("{comm}\0--secret-token=hunter2\0"),
        );
        write(&dir.join("comm"), &format!("{comm}\n"));
    }

    /// Removes a process from procfs (it exited); `cgroup.procs` is left as
    /// it was, as the kernel would race.
    /// Its `status` and `statm` are emptied first: a descriptor the agent keeps open
    /// then reads nothing, as procfs answers ESRCH for an exited process.
    pub fn remove_process(&self, pid: i32) -> io::Result<()> {
        let dir = self.proc_root().join(pid.to_string());
        let _ = fs::write(dir.join("status"), "");
        let _ = fs::write(dir.join("statm"), "");
        fs::remove_dir_all(dir)
    }
}

impl Drop for FakeCgroupTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("fake tree: mkdir {}: {e}", p.display()));
}

fn write(p: &Path, content: &str) {
    if let Some(parent) = p.parent() {
        mkdir(parent);
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("fake tree: write {}: {e}", p.display()));
}
