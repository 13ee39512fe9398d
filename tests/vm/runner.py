#!/usr/bin/python3
"""Scenario runner, inside the VM (t3vm-runner.service, from the 9p share).

Reads /share/config.json ({"scenarios": [names]}, `package` always first),
checks the VM is what the scenarios need (cgroup v2 with memory/io/cpu, PSI,
the agent's .deb on the share), starts alice's and bob's units and the
heartbeat client, runs each scenario (`package` installs the .deb; the others
set the packaged agent's mode in /etc/t3pressure/config.toml and restart it),
and writes /share/out/<scenario>.json as it goes, then /share/out/done.json.
The unit powers the VM off afterwards.
"""

import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # the share is the host's tests/vm copy
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vmlib  # noqa: E402
from heartbeat import HeartbeatClient  # noqa: E402
from vmlib import PORTS, Result, log, read_text  # noqa: E402

OUT = vmlib.SHARE + "/out"


class ScenarioTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise ScenarioTimeout("scenario timed out")


def write_json(name, obj):
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, os.path.join(OUT, name))


def environment():
    ctrl = (read_text("/sys/fs/cgroup/cgroup.controllers") or "").split()
    env = {
        "kernel": platform.release(),
        "cgroup2_controllers": ctrl,
        "psi": os.path.exists("/proc/pressure/memory"),
        "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
        "mem_total_kib": next((int(l.split()[1]) for l in (read_text("/proc/meminfo") or "").splitlines()
                               if l.startswith("MemTotal:")), None),
        "agent_deb": os.path.exists(vmlib.DEB),
        "perf_event_paranoid": (read_text("/proc/sys/kernel/perf_event_paranoid") or "").strip(),
        "mark_victim_format": (read_text("/sys/kernel/tracing/events/oom/mark_victim/format") or "").strip(),
    }
    env["ok"] = all(c in ctrl for c in ("memory", "io", "cpu")) and env["psi"] and env["agent_deb"]
    return env


def reset_unit_properties():
    """Drops the runtime drop-ins scenarios made with set-property."""
    subprocess.run("rm -rf /run/systemd/system.control/t3-serve@*", shell=True)
    subprocess.run(["systemctl", "daemon-reload"])


def save_artifacts():
    subprocess.run(f"cat {vmlib.STATE_DIR}/events*.jsonl* > {OUT}/events.jsonl 2>/dev/null", shell=True)
    subprocess.run(f"journalctl -o short-precise -u t3pressure.service > {OUT}/agent-journal.txt 2>&1", shell=True)
    subprocess.run(f"journalctl -o short-precise > {OUT}/journal.txt 2>&1", shell=True)


def run_scenario(name, mod, hb):
    """Runs one scenario (agent restarted in its mode first); writes and
    returns its result."""
    res = Result(mod.NAME, mod.DESCRIPTION)
    log(f"=== {name} (agent mode {mod.MODE}) ===")
    if mod.MODE is not None:  # None: the scenario handles the agent itself (package)
        try:
            up = vmlib.agent_start(mod.MODE)
        except Exception as e:  # no package: the scenario's checks say what is missing
            up = False
            log(f"cannot start the agent in {mod.MODE} mode: {e}")
        res.note(agent_mode=mod.MODE, agent_up=up)
        if not up:
            log(f"agent not healthy in {mod.MODE} mode; running the scenario anyway")
    signal.alarm(mod.TIMEOUT)
    try:
        mod.run(hb, res)
    except Exception:  # a scenario's crash is its result, the next one still runs
        res.error = traceback.format_exc()
        log(f"{name}: error: {res.error}")
    finally:
        signal.alarm(0)
    r = res.to_json()
    write_json(name + ".json", r)
    log(f"=== {name}: {'PASS' if r['ok'] else 'FAIL'} (infra {'ok' if r['infra_ok'] else 'FAILED'}) "
        f"in {r['duration_s']} s ===")
    reset_unit_properties()
    return r


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs("/run/t3vm", exist_ok=True)
    os.chmod("/run/t3vm", 0o1777)
    with open(vmlib.SHARE + "/config.json") as f:
        config = json.load(f)
    env = environment()
    env["booted_at"] = time.time()
    write_json("boot.json", env)
    log(f"environment: {env}")
    if not env["ok"]:
        log("environment is not what the scenarios need; stopping")
        return 1
    for user in ("alice", "bob"):
        pid = vmlib.start_user(user)
        log(f"{vmlib.unit(user)} up, MainPID {pid}")
    hb = HeartbeatClient({u: p for u, p in PORTS.items()})
    hb.start()
    signal.signal(signal.SIGALRM, on_alarm)
    for name in config["scenarios"]:
        mod = importlib.import_module("scenarios." + name)
        r = run_scenario(name, mod, hb)
        if not r["infra_ok"] and getattr(mod, "RETRY_IF_INFRA_FAILS", False):
            # The load did not do what the scenario needs (e.g. the serve got
            # a CPU slot and answered mid-throttle): a fact about the
            # scenario, not the agent. One more try; both attempts are kept.
            log(f"=== {name}: the scenario did not happen as designed (infra failed); once more ===")
            first = r
            r = run_scenario(name, mod, hb)
            r["notes"]["first_attempt"] = {"checks": first["checks"], "notes": first["notes"]}
            write_json(name + ".json", r)
    hb.stop()
    subprocess.run(["systemctl", "stop", vmlib.AGENT_UNIT])
    save_artifacts()
    write_json("done.json", {"finished_at": time.time(), "scenarios": config["scenarios"]})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        save_artifacts()
        sys.exit(1)
