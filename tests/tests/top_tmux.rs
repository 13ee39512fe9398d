//! `t3pressure top` driven for real in a detached tmux session: keys in,
//! `tmux capture-pane` out, and the terminal restored after quit.
//!
//! `top_live_against_agent` runs against the real agent (`t3pressure run
//! --no-bpf`) on a fake cgroup tree; `top_live_against_stub` against a tiny
//! HTTP server serving the fixture snapshot (it also exercises the
//! lost-connection banner). Both need tmux and FAIL when it is missing.
//! `top_idle_cpu` (ignored: 60 s) prints the CPU use of an idle-refreshing
//! view.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const COLS: u16 = 120;
const ROWS: u16 = 40;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The real binary, built on demand (`T3PRESSURE_BIN` overrides).
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("T3PRESSURE_BIN") {
        return PathBuf::from(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "t3pressure",
            "--bin",
            "t3pressure",
        ])
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of t3pressure failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin = target.join("debug").join("t3pressure");
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

fn require_tmux() {
    let out = Command::new("tmux").arg("-V").output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => panic!("tmux is required for this test and is not installed (apt-get install tmux)"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A detached tmux session running a shell; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(tag: &str) -> Tmux {
        require_tmux();
        let name = format!("t3top-{tag}-{}", std::process::id());
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x"])
            .arg(COLS.to_string())
            .arg("-y")
            .arg(ROWS.to_string())
            .args([
                "env",
                "-i",
                "PATH=/usr/bin:/bin",
                "TERM=xterm-256color",
                "PS1=$ ",
            ])
            .args(["sh"])
            .status()
            .expect("run tmux new-session");
        assert!(status.success(), "tmux new-session failed");
        Tmux { name }
    }

    fn send(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("run tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys:?} failed");
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("run tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn format(&self, f: &str) -> String {
        let out = Command::new("tmux")
            .args(["display-message", "-p", "-t", &self.name, f])
            .output()
            .expect("run tmux display-message");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls the pane until `pred` holds; panics with the last screen.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pane_pid(&self) -> i32 {
        self.format("#{pane_pid}")
            .parse()
            .expect("pane pid is a number")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// Serves one fixed body on `/api/v1/snapshot` (anything else: 404) until
/// stopped. Enough HTTP for ureq: read the head, answer, close.
struct Stub {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stub {
    fn start(body: String) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => answer(s, &body),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Stub {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("stub thread");
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut s: TcpStream, body: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&byte[..n]),
        }
    }
    let ok = head.starts_with(b"GET /api/v1/snapshot ");
    let (status, body) = if ok {
        ("200 OK", body)
    } else {
        ("404 Not Found", "")
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn fixture_json() -> String {
    let path = workspace().join("agent/src/clients/top/testdata/several_users.json");
    std::fs::read_to_string(&path).expect("fixture snapshot JSON")
}

/// The selected row starts with the highlight marker "> ".
fn selected_user(screen: &str) -> Option<String> {
    screen
        .lines()
        .find_map(|l| l.strip_prefix("> "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// Start `top`, move, sort, open detail, quit; the terminal must come back.
fn drive(tmux: &Tmux, bin: &Path, addr: &str, first_user: &str) {
    tmux.send(&[&format!("{} top --connect {addr}", bin.display()), "Enter"]);
    let screen = tmux.wait_for("the table", |s| {
        s.contains("MEMORY/MAX") && s.contains(first_user)
    });
    assert_eq!(
        tmux.format("#{alternate_on}"),
        "1",
        "top uses the alternate screen"
    );
    let first = selected_user(&screen).expect("a row is selected");

    tmux.send(&["Down"]);
    let screen = tmux.wait_for("selection to move", |s| {
        selected_user(s).is_some_and(|u| u != first)
    });
    let second = selected_user(&screen).expect("selected");

    tmux.send(&["s"]);
    tmux.wait_for("sort growth", |s| s.contains("sort growth"));

    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the detail pane", |s| s.contains("RECENT EVENTS"));
    assert!(
        screen.contains(&format!("t3-serve@{second}.service")),
        "detail of {second} (selection kept across sort):\n{screen}"
    );

    tmux.send(&["q"]);
    tmux.wait_for("the shell back", |s| !s.contains("MEMORY/MAX"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.format("#{alternate_on}") != "0" {
        assert!(
            Instant::now() < deadline,
            "alternate screen still on after quit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux.send(&["echo top-exit=$?", "Enter"]);
    tmux.wait_for("exit status 0", |s| s.contains("top-exit=0"));
    // Raw mode is off again: the shell echoes typed text with a newline.
    tmux.send(&["stty -a | grep -o ' -icanon\\| icanon' | head -1", "Enter"]);
    let screen = tmux.wait_for("stty output", |s| {
        s.lines()
            .any(|l| l.trim() == "icanon" || l.trim() == "-icanon")
    });
    assert!(
        !screen.lines().any(|l| l.trim() == "-icanon"),
        "terminal left in raw mode:\n{screen}"
    );
}

#[test]
fn top_live_against_stub() {
    let bin = binary();
    let mut stub = Stub::start(fixture_json());
    let tmux = Tmux::start("stub");
    drive(&tmux, &bin, &stub.addr, "carol");

    // Lost connection: the view stays up with a banner; Ctrl-C quits cleanly.
    tmux.send(&[
        &format!("{} top --connect {}", bin.display(), stub.addr),
        "Enter",
    ]);
    tmux.wait_for("the table", |s| s.contains("carol"));
    stub.stop();
    let screen = tmux.wait_for("the banner", |s| s.contains("CONNECTION LOST"));
    assert!(screen.contains("carol"), "last data still shown:\n{screen}");
    tmux.send(&["C-c"]);
    tmux.wait_for("exit", |s| !s.contains("CONNECTION LOST"));
    assert_eq!(tmux.format("#{alternate_on}"), "0", "alternate screen left");
    tmux.send(&["echo top-exit2=$?", "Enter"]);
    tmux.wait_for("exit status 0", |s| s.contains("top-exit2=0"));
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn top_live_against_agent() {
    let bin = binary();
    let tmp = tempfile::tempdir().expect("tempdir");
    // The project's fake tree builder: alice's and bob's units with files
    // captured from a real kernel.
    let tree = t3pressure::testing::fake_tree::FakeCgroupTree::new_in(tmp.path());
    tree.unit("alice");
    tree.unit("bob");
    let cg = tree.root();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent(
        Command::new(&bin)
            .args(["run", "--no-bpf", "--cgroup-root"])
            .arg(&cg)
            .args(["--listen", &addr, "--state-dir"])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent"),
    );
    // Wait for a snapshot that lists both users.
    let url = format!("http://{addr}/api/v1/snapshot");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = agent.0.try_wait().expect("agent status") {
            let mut err = String::new();
            if let Some(mut e) = agent.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the agent exited ({status}) before serving a snapshot:\n{err}");
        }
        let body = ureq::get(&url)
            .timeout(Duration::from_millis(500))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        if body.contains("\"alice\"") && body.contains("\"bob\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent at {addr} served no snapshot with alice and bob"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let tmux = Tmux::start("agent");
    drive(&tmux, &bin, &addr, "alice");
}

/// CPU of an idle view refreshing every second for 60 s, from
/// /proc/PID/stat utime+stime. Prints the figure; asserts nothing timed.
#[test]
#[ignore = "takes 60 s; run with --ignored to measure"]
fn top_idle_cpu() {
    let bin = binary();
    let stub = Stub::start(fixture_json());
    let tmux = Tmux::start("cpu");
    tmux.send(&[
        &format!("exec {} top --connect {}", bin.display(), stub.addr),
        "Enter",
    ]);
    tmux.wait_for("the table", |s| s.contains("carol"));
    let pid = tmux.pane_pid();
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat of top");
        let after = &stat[stat.rfind(')').expect("comm end") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are 11 and 12 after the state.
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t0 = ticks();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let cpu_s = (ticks() - t0) as f64 / hz;
    let wall = start.elapsed().as_secs_f64();
    println!(
        "top idle at 1 s refresh: {cpu_s:.2} s CPU in {wall:.1} s = {:.3} % of a core",
        cpu_s / wall * 100.0
    );
    tmux.send(&["q"]);
}
