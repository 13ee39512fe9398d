"""Scenario 0, package (always first): the agent's Debian package installs on
the VM's Debian 12 with dpkg, its unit (deploy/systemd/t3pressure.service,
Type=notify, WatchdogSec=30s, DynamicUser, hardened) is enabled and started
by the package's maintainer scripts, reaches `active` only through READY=1,
feeds the watchdog, and loads its eBPF programs under that unit."""

import os
import re
import subprocess
import time

from vmlib import (AGENT_CONFIG, AGENT_UNIT, DEB, agent_healthy, agent_pid, metric, metrics, read_text, systemctl,
                   unit_prop, wait_for)

NAME = "package"
MODE = None  # installs the agent itself; the packaged config's mode (enforce)
TIMEOUT = 300
DESCRIPTION = "the .deb installs with dpkg; its Type=notify unit is enabled, ready, fed, and loads BPF"

PROPS = ["Type", "NotifyAccess", "ActiveState", "SubState", "UnitFileState", "StatusText", "WatchdogUSec",
         "WatchdogTimestampMonotonic", "MainPID", "NRestarts", "FragmentPath", "DynamicUser"]


def show(name):
    out = systemctl("show", "-p", ",".join(PROPS), name, check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def run(hb, res):
    t0 = time.time()
    r = subprocess.run(["dpkg", "-i", DEB], capture_output=True, text=True)
    res.note(dpkg_stdout=r.stdout[-2000:], dpkg_stderr=r.stderr[-2000:], install_s=round(time.time() - t0, 1))
    res.agent("dpkg -i the .deb", "exit 0", f"exit {r.returncode}: {r.stderr.strip()[-200:] or 'no stderr'}",
              r.returncode == 0)
    st = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", "t3pressure"], capture_output=True, text=True)
    res.agent("package state", "install ok installed", st.stdout.strip() or st.stderr.strip(),
              st.stdout.startswith("install ok installed"))
    files = {p: os.path.exists(p) for p in
             ("/usr/bin/t3pressure", "/usr/lib/systemd/system/t3pressure.service", AGENT_CONFIG,
              "/usr/share/man/man1/t3pressure.1.gz", "/usr/share/doc/t3pressure/RUNBOOK.md",
              "/usr/share/doc/t3pressure/prometheus/alerts.yml", "/usr/share/doc/t3pressure/prometheus/scrape.yml")}
    res.agent("packaged files in place", "binary, unit, config, man page, runbook, Prometheus files",
              "missing: " + ", ".join(p for p, ok in files.items() if not ok) if not all(files.values())
              else "all present", all(files.values()))
    conf = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "t3pressure"], capture_output=True,
                          text=True).stdout.strip()
    res.agent("config is a conffile (local edits survive upgrades)", AGENT_CONFIG, conf or "no conffiles",
              conf.split()[:1] == [AGENT_CONFIG])
    enabled = systemctl("is-enabled", AGENT_UNIT, check=False)
    res.agent("unit enabled by the maintainer scripts", "enabled", enabled or "unknown", enabled == "enabled")

    # Type=notify: `active` only after READY=1 (start-up is `activating` until then).
    active = wait_for(lambda: unit_prop(AGENT_UNIT, "ActiveState") == "active", 60, step=0.25)
    p = show(AGENT_UNIT)
    res.note(unit_after_install=p)
    res.agent("unit type", "Type=notify, NotifyAccess=main, WatchdogUSec=30s",
              f"Type={p.get('Type')}, NotifyAccess={p.get('NotifyAccess')}, WatchdogUSec={p.get('WatchdogUSec')}",
              p.get("Type") == "notify" and p.get("NotifyAccess") == "main" and p.get("WatchdogUSec") == "30s")
    # Debian 12 merges /lib into /usr/lib; systemd names the unit by /lib.
    res.agent("unit is the packaged one", "{/usr,}/lib/systemd/system/t3pressure.service, no drop-ins",
              f"{p.get('FragmentPath')}, drop-ins: {unit_prop(AGENT_UNIT, 'DropInPaths') or 'none'}",
              p.get("FragmentPath") in ("/usr/lib/systemd/system/t3pressure.service",
                                        "/lib/systemd/system/t3pressure.service")
              and not unit_prop(AGENT_UNIT, "DropInPaths"))
    res.agent("started by the package and ready (READY=1)", "ActiveState=active SubState=running",
              f"{p.get('ActiveState')}/{p.get('SubState')}, StatusText {p.get('StatusText')!r}",
              bool(active) and p.get("SubState") == "running")
    pid = agent_pid()
    user = subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    res.agent("runs as the unit's dynamic user", "DynamicUser=yes, not root", f"DynamicUser={p.get('DynamicUser')}, "
              f"pid {pid} user {user or '?'}", p.get("DynamicUser") == "yes" and user not in ("", "root"))
    # The agent pings every WatchdogSec/2 (agent/src/outputs/systemd.rs).
    w0 = int(p.get("WatchdogTimestampMonotonic") or 0)
    w1 = wait_for(lambda: int(unit_prop(AGENT_UNIT, "WatchdogTimestampMonotonic") or 0) > w0
                  and int(unit_prop(AGENT_UNIT, "WatchdogTimestampMonotonic")), 20, step=0.5) or w0
    res.agent("agent feeds the watchdog (WATCHDOG=1)", "WatchdogTimestamp advances within 20 s (pings every 15 s)",
              f"{w0} -> {w1} (+{(w1 - w0) / 1e6:.1f} s)", w0 > 0 and w1 > w0)
    healthy = wait_for(agent_healthy, 20, step=0.25)
    m = metrics()
    bpf = metric(m, "t3pressure_bpf_loaded")
    res.agent("/healthz and /metrics answer", "both", f"healthz {'ok' if healthy else 'no answer'}, "
              f"metrics {'ok' if m else 'no answer'}", bool(healthy) and bool(m))
    res.agent("eBPF loaded under the packaged (hardened) unit", "t3pressure_bpf_loaded 1", bpf, bpf == 1)
    journal = subprocess.run(["journalctl", "-o", "cat", "-u", AGENT_UNIT, "--no-pager"], capture_output=True,
                             text=True).stdout
    bpf_lines = [line for line in journal.splitlines() if re.search(r"bpf|BPF|oom|OOM|tracepoint", line)]
    res.note(agent_journal_bpf=bpf_lines[-20:])
    # The devvm's kernel's verifier takes sched_switch's direct cgroup loads
    # (agent-ebpf shared.rs `unit_of_task`); a refusal would fall back to the
    # helper call, ~35 ns dearer per context switch, and say so here.
    check_line = next((line for line in bpf_lines if "BPF unit check" in line), "")
    res.agent("sched_switch finds a task's unit by direct cgroup loads on this kernel",
              "log: BPF unit check: direct cgroup loads", check_line[-120:] or "no such log line",
              "direct cgroup loads" in check_line)
    chk = subprocess.run(["systemd-run", "--quiet", "--wait", "--pipe", "--collect",
                          "-p", "DynamicUser=yes", "-p", "AmbientCapabilities=" + caps(),
                          "-p", "CapabilityBoundingSet=" + caps(), "-p", "NoNewPrivileges=yes",
                          "/usr/bin/t3pressure", "check"], capture_output=True, text=True, timeout=60)
    res.note(check_as_unit_user=(chk.stdout + chk.stderr)[-3000:], check_rc=chk.returncode)
    bpf_line = next((line for line in chk.stdout.splitlines() if line.split()[1:2] == ["bpf"]), "")
    res.agent("`t3pressure check` as the unit's user and capabilities", "bpf ok, says how OOM kills are traced",
              " ".join(bpf_line.split())[:160] or f"no bpf line (exit {chk.returncode})",
              bpf_line.startswith("ok") and "OOM kills via" in bpf_line)
    probe = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"], capture_output=True,
                           text=True, timeout=60).stdout
    proto = [line for line in probe.splitlines() if "btf_trace_mark_victim" in line]
    res.note(btf_trace_mark_victim=proto)


def caps():
    """The unit's capability set, from the installed unit file."""
    text = read_text("/usr/lib/systemd/system/t3pressure.service") or ""
    m = re.search(r"(?m)^AmbientCapabilities=(.*)$", text)
    return m.group(1).strip() if m else ""
