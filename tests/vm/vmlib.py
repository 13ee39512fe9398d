"""Helpers for the scenarios run inside the VM: units and their cgroups, the
agent (service, event log, /metrics, /api/v1/snapshot), processes started
inside a unit through the stand-in serve, and the result record each
scenario fills with checks.

Checks are of two kinds:
  infra  - the scenario really happened (the hog entered alice's unit, the
           kernel OOM-killed inside the unit, the heartbeat client saw the
           stall). A failed infra check fails the suite, always.
  agent  - a figure the agent must meet. The xtask's KNOWN_FAILURES may
           excuse a scenario whose failed checks are all agent checks.
"""

import glob
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

CG_ROOT = "/sys/fs/cgroup"
SHARE = "/share"
VM_DIR = SHARE + "/vm"
STATE_DIR = "/var/lib/t3pressure"
AGENT_ADDR = "127.0.0.1:9773"
AGENT_UNIT = "t3pressure.service"
# The agent comes as its Debian package (`cargo xtask vm` builds it); the
# `package` scenario installs it, the others switch its mode in the
# packaged config file (a dpkg conffile, as an operator would).
DEB = SHARE + "/pkg/t3pressure.deb"
AGENT_CONFIG = "/etc/t3pressure/config.toml"
PORTS = {"alice": 8001, "bob": 8002, "carol": 8003}


def log(msg):
    print(f"[runner {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- units and cgroups ------------------------------------------------------


def unit(user):
    return f"t3-serve@{user}.service"


def unit_cgroup(user):
    """Cgroup path of a user's unit, relative to the cgroup root."""
    return f"/system.slice/system-t3\\x2dserve.slice/{unit(user)}"


def cg_path(user, name=""):
    return CG_ROOT + unit_cgroup(user) + ("/" + name if name else "")


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, OSError):
        return None


def cg_int(user, name):
    t = read_text(cg_path(user, name))
    if t is None:
        return None
    t = t.strip()
    return None if t == "max" else int(t)


def cg_keyed(user, name):
    t = read_text(cg_path(user, name)) or ""
    out = {}
    for line in t.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def systemctl(*args, check=True):
    r = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"systemctl {' '.join(args)}: {r.returncode} {r.stderr.strip()}")
    return r.stdout.strip()


def unit_prop(name, prop):
    return systemctl("show", "-p", prop, "--value", name, check=False)


def main_pid(user):
    v = unit_prop(unit(user), "MainPID")
    return int(v) if v.isdigit() else 0


def active_state(user):
    return unit_prop(unit(user), "ActiveState")


def wait_for(pred, timeout, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def heartbeat_ok(user, timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[user]}/heartbeat", timeout=timeout) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_user(user, fresh=False):
    """Starts (or with fresh=True restarts, for a clean memory.peak) a
    user's unit and waits for its heartbeat."""
    systemctl("restart" if fresh else "start", unit(user))
    if not wait_for(lambda: heartbeat_ok(user), 30):
        raise RuntimeError(f"{unit(user)} does not answer /heartbeat")
    return main_pid(user)


# --- processes inside a unit, started by its serve ------------------------


def base_dir(user):
    return f"/home/{user}/.t3"


def trigger(user, obj):
    path = os.path.join(base_dir(user), "trigger.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def spawn_in_unit(user, argv, tag, timeout=20):
    """Has the user's serve start argv as its child; returns the child pid."""
    cdir = os.path.join(base_dir(user), "children")
    for ext in (".pid", ".exit"):
        try:
            os.unlink(os.path.join(cdir, tag + ext))
        except FileNotFoundError:
            pass
    trigger(user, {"kind": "spawn", "argv": argv, "tag": tag})
    pid_file = os.path.join(cdir, tag + ".pid")
    pid = wait_for(lambda: (read_text(pid_file) or "").strip(), timeout)
    if not pid:
        raise RuntimeError(f"{user}'s serve did not start {tag}")
    return int(pid)


def child_exit(user, tag):
    """The child's return code as asyncio reports it (-9: SIGKILL), or None
    while it runs."""
    t = (read_text(os.path.join(base_dir(user), "children", tag + ".exit")) or "").strip()
    return int(t) if t.lstrip("-").isdigit() else None


CPU_MAX_STARVED = "1000 1000000"


def starve_cpu(res, user, seconds):
    """Starts 4 CPU burners in the user's unit for `seconds` + 3 and sets its
    cpu.max to 1 ms per 1 s (systemd's CPUQuota), so its serve waits on a
    throttled run queue; records the infra check. Returns (burner pid, the
    time the quota was set)."""
    argv = ["/usr/bin/python3", VM_DIR + "/burner.py", "--expect-cgroup", unit_cgroup(user),
            "--procs", "4", "--seconds", str(seconds + 3)]
    pid = spawn_in_unit(user, argv, "burner")
    t0 = time.time()
    systemctl("set-property", "--runtime", unit(user), "CPUQuotaPeriodSec=1s", "CPUQuota=0.1%")
    cpu_max = (read_text(cg_path(user, "cpu.max")) or "").strip()
    res.infra(f"cpu.max throttles {user}'s unit", CPU_MAX_STARVED, cpu_max or "absent", cpu_max == CPU_MAX_STARVED)
    return pid, t0


def unstarve_cpu(user):
    """Lifts the quota `starve_cpu` set and waits for the burners to exit;
    returns the time the quota was lifted."""
    systemctl("set-property", "--runtime", unit(user), "CPUQuota=", "CPUQuotaPeriodSec=")
    t_end = time.time()
    wait_for(lambda: child_exit(user, "burner") is not None, 30, step=0.25)
    return t_end


def pid_in_cgroup(pid, user):
    t = read_text(f"/proc/{pid}/cgroup") or ""
    return f"0::{unit_cgroup(user)}\n" in t or t.strip() == f"0::{unit_cgroup(user)}"


def hog_argv(user, rate_mb, cap_mb, max_seconds, plateau_mb=None, churn_mb=8, status=None):
    argv = ["/usr/bin/python3", VM_DIR + "/hog.py", "--expect-cgroup", unit_cgroup(user),
            "--rate-mb", str(rate_mb), "--cap-mb", str(cap_mb), "--max-seconds", str(max_seconds)]
    if plateau_mb:
        argv += ["--plateau-mb", str(plateau_mb), "--churn-mb", str(churn_mb)]
    if status:
        argv += ["--status", status]
    return argv


# --- the agent --------------------------------------------------------------


def set_agent_mode(mode):
    """Sets `mode = "..."` in the packaged config file; raises when the
    line is not there (the scenario would otherwise run in the wrong mode)."""
    import re

    text = read_text(AGENT_CONFIG)
    if text is None:
        raise RuntimeError(f"{AGENT_CONFIG} missing: is the package installed?")
    new, n = re.subn(r'(?m)^mode = "[a-z]+"$', f'mode = "{mode}"', text)
    if n != 1:
        raise RuntimeError(f"{AGENT_CONFIG}: {n} `mode = ...` lines, expected 1")
    if new != text:
        with open(AGENT_CONFIG, "w") as f:
            f.write(new)


AGENT_LOG_DROPIN = "/run/systemd/system/t3pressure.service.d/t3vm-log.conf"


def agent_debug_log():
    """A runtime drop-in that adds the stall detector's debug lines (the
    serve thread's figures per interval behind each window) to the agent's
    journal, for reading a failed run; reloads systemd when it is new."""
    want = "[Service]\nEnvironment=T3PRESSURE_LOG=info,t3pressure::detectors::stall=debug\n"
    if read_text(AGENT_LOG_DROPIN) == want:
        return
    os.makedirs(os.path.dirname(AGENT_LOG_DROPIN), exist_ok=True)
    with open(AGENT_LOG_DROPIN, "w") as f:
        f.write(want)
    systemctl("daemon-reload", check=False)


def agent_start(mode):
    """(Re)starts the packaged agent in a mode (set in its config file);
    returns True when /healthz answers."""
    set_agent_mode(mode)
    agent_debug_log()
    systemctl("restart", AGENT_UNIT, check=False)
    return bool(wait_for(agent_healthy, 20, step=0.25))


def agent_pid():
    v = unit_prop(AGENT_UNIT, "MainPID")
    return int(v) if v.isdigit() else 0


def http_get(path, timeout=5.0):
    try:
        with urllib.request.urlopen(f"http://{AGENT_ADDR}{path}", timeout=timeout) as r:
            return r.read().decode()
    except (OSError, urllib.error.URLError, ValueError):
        return None


def agent_healthy():
    return http_get("/healthz", timeout=2.0) is not None


def snapshot():
    t = http_get("/api/v1/snapshot")
    try:
        return json.loads(t) if t else None
    except ValueError:
        return None


def snapshot_users():
    s = snapshot()
    if s is None:
        return None
    return sorted(u.get("user") for u in s.get("units", []))


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels.items())): value}."""
    out = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            if "{" in line:
                name, rest = line.split("{", 1)
                lab, val = rest.rsplit("}", 1)
                labels = {}
                for part in _split_labels(lab):
                    k, v = part.split("=", 1)
                    labels[k.strip()] = v.strip().strip('"')
            else:
                name, val = line.split(None, 1)
                labels = {}
            out[(name.strip(), frozenset(labels.items()))] = float(val.split()[0])
        except ValueError:
            continue
    return out


def _split_labels(s):
    parts, cur, quoted = [], "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            if cur.strip():
                parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def metrics():
    t = http_get("/metrics")
    return None if t is None else parse_metrics(t)


def metric(m, name, **labels):
    if m is None:
        return None
    return m.get((name, frozenset(labels.items())))


def metric_delta(before, after, name, **labels):
    a = metric(after, name, **labels)
    if a is None:
        return None
    return a - (metric(before, name, **labels) or 0.0)


def events(since=0.0, kind=None, user=None):
    """Event log lines with ts >= since, from every (rotated) log file."""
    files = sorted(glob.glob(STATE_DIR + "/events*.jsonl*"), key=lambda p: os.stat(p).st_mtime)
    out = []
    for path in files:
        for line in (read_text(path) or "").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("ts", 0) < since:
                continue
            if kind and e.get("kind") != kind:
                continue
            if user and e.get("user") != user:
                continue
            out.append(e)
    return sorted(out, key=lambda e: e.get("ts", 0))


def raw_event_lines():
    files = sorted(glob.glob(STATE_DIR + "/events*.jsonl*"), key=lambda p: os.stat(p).st_mtime)
    lines = []
    for path in files:
        lines += (read_text(path) or "").splitlines()
    return lines


# --- results ----------------------------------------------------------------


class Result:
    def __init__(self, name, description):
        self.name = name
        self.description = description
        self.checks = []
        self.notes = {}
        self.error = None
        self.t0 = time.time()

    def check(self, name, kind, expected, measured, ok):
        ok = bool(ok)
        self.checks.append(dict(name=name, kind=kind, expected=str(expected), measured=str(measured), ok=ok))
        log(f"{self.name}: [{kind}] {name}: expected {expected}, measured {measured}: {'ok' if ok else 'FAIL'}")
        return ok

    def infra(self, name, expected, measured, ok):
        return self.check(name, "infra", expected, measured, ok)

    def agent(self, name, expected, measured, ok):
        return self.check(name, "agent", expected, measured, ok)

    def note(self, **kw):
        self.notes.update(kw)

    def to_json(self):
        return dict(
            name=self.name,
            description=self.description,
            checks=self.checks,
            notes=self.notes,
            error=self.error,
            duration_s=round(time.time() - self.t0, 1),
            infra_ok=self.error is None and all(c["ok"] for c in self.checks if c["kind"] == "infra"),
            ok=self.error is None and bool(self.checks) and all(c["ok"] for c in self.checks),
        )


def fmt_mb(b):
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB"


class MemWatch:
    """Samples a unit's memory.current every 50 ms in a thread: the highest
    value seen (memory.peak is the kernel's own, this one is the runner's)."""

    def __init__(self, user):
        import threading

        self.user = user
        self.max = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            v = cg_int(self.user, "memory.current")
            if v is not None and v > self.max:
                self.max = v
            self.stop_ev.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join(2)
