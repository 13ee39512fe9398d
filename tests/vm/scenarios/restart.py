"""Scenario 7, restart: the agent is SIGKILLed mid-scenario (while a hog
grows in alice's unit) and restarted by systemd; the event log keeps every
line from before, the restarted agent logs its start and still catches the
hog, and unit events after the restart are logged too."""

import json
import time

from vmlib import (agent_healthy, agent_pid, child_exit, events, hog_argv, raw_event_lines, read_text, spawn_in_unit,
                   start_user, systemctl, unit, unit_prop, wait_for, cg_keyed, AGENT_UNIT)

NAME = "restart"
MODE = "enforce"
TIMEOUT = 300
DESCRIPTION = "agent SIGKILLed and restarted mid-scenario; event log keeps everything from before"

STATUS = "/run/t3vm/restart-hog.json"


def run(hb, res):
    start_user("alice", fresh=True)
    t0 = time.time()
    systemctl("start", unit("carol"))
    time.sleep(3)
    before = raw_event_lines()
    carol_start = events(t0, "unit_start", "carol")
    ev0 = cg_keyed("alice", "memory.events")
    apid0 = agent_pid()
    n0 = int(unit_prop(AGENT_UNIT, "NRestarts") or 0)
    # 10 MiB/s: from the kill at 100 MiB the hog needs ~40 s to reach
    # MemoryMax=512M. The packaged unit restarts after RestartSec=2s, and the
    # debug agent then needs ~25-30 s under TCG until it samples again
    # (measured: SIGKILL 21:57:51, serving 21:58:22); at 20 MiB/s the kernel
    # OOM-killed the hog first.
    pid = spawn_in_unit("alice", hog_argv("alice", rate_mb=10, cap_mb=640, max_seconds=120, status=STATUS), "hog")

    def allocated():
        try:
            return json.loads(read_text(STATUS) or "").get("allocated_mb", 0)
        except ValueError:
            return 0

    wait_for(lambda: allocated() >= 100, 90, step=0.1)
    t_kill = time.time()
    at_kill = allocated()
    systemctl("kill", "--signal=SIGKILL", AGENT_UNIT, check=False)
    wait_for(lambda: agent_pid() not in (0, apid0), 15, step=0.1)
    healthy = wait_for(agent_healthy, 20, step=0.25)
    t_back = time.time()
    apid1 = agent_pid()
    n1 = int(unit_prop(AGENT_UNIT, "NRestarts") or 0)
    res.agent("agent SIGKILLed mid-scenario and restarted by systemd", "new MainPID, NRestarts +1",
              f"pid {apid0} -> {apid1}, NRestarts +{n1 - n0}, killed at {at_kill} MiB of hog",
              apid1 not in (0, apid0) and n1 == n0 + 1)
    rc = wait_for(lambda: child_exit("alice", "hog") is not None, 150, step=0.2) and child_exit("alice", "hog")
    systemctl("stop", unit("carol"))
    time.sleep(3)
    after = raw_event_lines()
    ev1 = cg_keyed("alice", "memory.events")
    oom = ev1.get("oom_kill", 0) - ev0.get("oom_kill", 0)
    res.note(hog_pid=pid, hog_rc=rc, agent_back_after_s=round(t_back - t_kill, 2), healthy=bool(healthy),
             lines_before=len(before), lines_after=len(after))
    res.agent("events before the kill were logged", "unit_start for carol before the kill",
              len(carol_start), len(carol_start) == 1)
    it = iter(after)
    kept = all(any(line == x for x in it) for line in before)
    res.agent("event log keeps every line from before", f"all {len(before)} lines, in order, after the restart",
              f"{'all' if kept else 'NOT all'} kept; {len(after)} lines now", kept and len(before) > 0)
    starts = [e for e in events(t_kill, "agent_start")]
    res.agent("restarted agent logs its start", "1 agent_start after the kill", len(starts), len(starts) == 1)
    kills = [e for e in events(t_kill, "runaway", "alice") if e.get("action") == "killed" and e.get("pid") == pid]
    res.agent("restarted agent still catches the hog", f"killed event for pid {pid}, rc -9, oom_kill +0",
              f"{len(kills)} event(s), rc {rc}, oom_kill +{oom}", len(kills) == 1 and rc == -9 and oom == 0)
    stops = events(t_back, "unit_stop", "carol")
    res.agent("unit events after the restart", "unit_stop for carol", len(stops), len(stops) == 1)
