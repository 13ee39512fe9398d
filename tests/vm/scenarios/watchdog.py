"""Scenario 8, watchdog: the packaged unit's WatchdogSec=30s (unchanged, no
drop-in) catches a hung agent. The agent's MainPID is SIGSTOPped; systemd
must declare a watchdog timeout after 30 s, kill it with SIGABRT, restart
it (NRestarts +1, new MainPID) and the new agent must be ready (READY=1,
/healthz) again."""

import subprocess
import time

from vmlib import AGENT_UNIT, agent_healthy, agent_pid, events, unit_prop, wait_for

NAME = "watchdog"
MODE = "enforce"
TIMEOUT = 150
DESCRIPTION = "agent SIGSTOPped past WatchdogSec=30s: systemd SIGABRTs and restarts it, the new one is ready"

WATCHDOG_S = 30


def journal_since(t0):
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0 - 1))
    return subprocess.run(["journalctl", "-o", "short-precise", "--no-pager", "--since", since, "-u", AGENT_UNIT],
                          capture_output=True, text=True).stdout


def run(hb, res):
    wd = unit_prop(AGENT_UNIT, "WatchdogUSec")
    res.infra("watchdog configured by the packaged unit", f"WatchdogUSec={WATCHDOG_S}s", wd, wd == f"{WATCHDOG_S}s")
    pid0 = agent_pid()
    n0 = int(unit_prop(AGENT_UNIT, "NRestarts") or 0)
    res.infra("agent running before the stop", "MainPID > 0, active",
              f"pid {pid0}, {unit_prop(AGENT_UNIT, 'ActiveState')}",
              pid0 > 0 and unit_prop(AGENT_UNIT, "ActiveState") == "active")
    if pid0 <= 0:
        return
    t0 = time.time()
    subprocess.run(["kill", "-STOP", str(pid0)], check=True)
    stopped = wait_for(lambda: (open(f"/proc/{pid0}/stat").read().split(") ", 1)[1][:1] == "T"), 5, step=0.1)
    res.infra("agent stopped (SIGSTOP)", "state T", "T" if stopped else "not stopped", stopped)
    # Its last WATCHDOG=1 (CLOCK_MONOTONIC us, as time.monotonic()): systemd
    # must wait WatchdogSec from there, not from the SIGSTOP (the agent pings
    # every 15 s, so the stop may come up to 15 s after the last ping).
    last_ping = int(unit_prop(AGENT_UNIT, "WatchdogTimestampMonotonic") or 0) / 1e6
    # Past the watchdog: 30 s, plus RestartSec=2s, plus TCG slack.
    new_pid = wait_for(lambda: agent_pid() not in (0, pid0) and agent_pid(), WATCHDOG_S + 45, step=0.25)
    t_new = time.time()
    since_ping = time.monotonic() - last_ping
    ready = wait_for(lambda: unit_prop(AGENT_UNIT, "ActiveState") == "active", 40, step=0.25)
    t_ready = time.time()
    healthy = wait_for(agent_healthy, 20, step=0.25)
    n1 = int(unit_prop(AGENT_UNIT, "NRestarts") or 0)
    j = journal_since(t0)
    timeout_lines = [line for line in j.splitlines() if "Watchdog timeout" in line]
    abrt_lines = [line for line in j.splitlines() if "SIGABRT" in line or "ABRT" in line]
    res.note(stopped_pid=pid0, new_pid=new_pid, restarted_after_s=round(t_new - t0, 1),
             ready_after_s=round(t_ready - t0, 1), journal=j.splitlines()[-30:])
    res.agent("systemd declared a watchdog timeout", "journal 'Watchdog timeout'",
              timeout_lines[0].split(": ", 1)[-1] if timeout_lines else "no such line", bool(timeout_lines))
    res.agent("hung agent killed with SIGABRT", "journal: SIGABRT / status=6/ABRT",
              abrt_lines[-1].split(": ", 1)[-1] if abrt_lines else "no such line", bool(abrt_lines))
    res.agent("restarted by systemd", f"new MainPID, NRestarts +1, >= {WATCHDOG_S} s after the last ping",
              f"pid {pid0} -> {new_pid or 'none'}, NRestarts +{n1 - n0}, {since_ping:.1f} s after the last ping "
              f"({t_new - t0:.1f} s after the SIGSTOP)",
              bool(new_pid) and n1 == n0 + 1 and last_ping > 0 and since_ping >= WATCHDOG_S)
    res.agent("new agent ready again", "ActiveState=active (READY=1) and /healthz answers",
              f"{unit_prop(AGENT_UNIT, 'ActiveState')}, healthz {'ok' if healthy else 'no answer'}",
              bool(ready) and bool(healthy))
    starts = events(t0, "agent_start")
    res.agent("new agent logs its start", "1 agent_start after the SIGSTOP", len(starts), len(starts) == 1)
