"""Scenario 1, runaway in enforce mode: a hog inside alice's unit grows anon
memory steadily; the agent kills it before memory.current reaches 95 % of
MemoryMax; no kernel OOM kill; alice's serve keeps its MainPID; bob is
untouched; one `killed` event in the log and in the metrics."""

import time

from vmlib import (MemWatch, cg_int, cg_keyed, child_exit, events, fmt_mb, hog_argv, main_pid,
                   metric_delta, metrics, pid_in_cgroup, spawn_in_unit, start_user, active_state, wait_for)

NAME = "runaway_enforce"
MODE = "enforce"
TIMEOUT = 240
DESCRIPTION = "hog grows 25 MiB/s in alice's unit; agent kills it < 95% of MemoryMax"


def run(hb, res):
    alice = start_user("alice", fresh=True)  # fresh: memory.peak counts this scenario only
    bob = start_user("bob")
    mem_max = cg_int("alice", "memory.max")
    ev0, bob_ev0 = cg_keyed("alice", "memory.events"), cg_keyed("bob", "memory.events")
    m0 = metrics()
    t0 = time.time()
    with MemWatch("alice") as mw:
        pid = spawn_in_unit("alice", hog_argv("alice", rate_mb=25, cap_mb=640, max_seconds=120), "hog")
        res.infra("hog runs inside alice's unit", "in t3-serve@alice.service", f"pid {pid}", pid_in_cgroup(pid, "alice"))
        rc = wait_for(lambda: child_exit("alice", "hog") is not None, 150, step=0.2) and child_exit("alice", "hog")
    time.sleep(3)  # let the agent write its event and update its counters
    ev1, bob_ev1 = cg_keyed("alice", "memory.events"), cg_keyed("bob", "memory.events")
    peak = cg_int("alice", "memory.peak")
    m1 = metrics()
    oom = ev1.get("oom_kill", 0) - ev0.get("oom_kill", 0)
    res.note(hog_pid=pid, hog_rc=rc, memory_max=mem_max, memory_peak=peak, runner_max_current=mw.max)
    # rc 0: the hog's 120 s ran out before it reached MemoryMax: nothing was tested.
    res.infra("hog killed before its 120 s ran out", "killed by a signal (rc < 0)", f"rc {rc}",
              isinstance(rc, int) and rc is not True and rc < 0)
    res.infra("MemoryMax scaled", "512 MiB", fmt_mb(mem_max), mem_max == 512 << 20)
    limit = 0.95 * (mem_max or 0)
    res.agent("hog SIGKILLed by the agent", "rc -9 and oom_kill +0", f"rc {rc}, oom_kill +{oom}", rc == -9 and oom == 0)
    res.agent("memory.peak below 95% of MemoryMax", f"< {fmt_mb(limit)}",
              f"{fmt_mb(peak)} (runner saw {fmt_mb(mw.max)})", peak is not None and peak < limit)
    res.agent("alice's serve kept its MainPID", alice, main_pid("alice"),
              main_pid("alice") == alice and active_state("alice") == "active")
    kills = [e for e in events(t0, "runaway", "alice") if e.get("action") == "killed"]
    res.agent("one `killed` event for the hog", f"1 event, pid {pid}",
              f"{len(kills)} event(s), pids {[e.get('pid') for e in kills]}",
              len(kills) == 1 and kills[0].get("pid") == pid)
    d = metric_delta(m0, m1, "t3pressure_runaway_actions_total", user="alice", action="killed")
    res.agent("runaway_actions_total{alice,killed}", "+1", d, d == 1)
    bob_events = events(t0, "runaway", "bob") + events(t0, "oom_kill", "bob")
    bob_oom = bob_ev1.get("oom_kill", 0) - bob_ev0.get("oom_kill", 0)
    res.agent("bob untouched", f"MainPID {bob}, oom_kill +0, no events",
              f"MainPID {main_pid('bob')}, oom_kill +{bob_oom}, {len(bob_events)} event(s)",
              main_pid("bob") == bob and bob_oom == 0 and not bob_events)
