"""Scenario 2, runaway in observe mode: the same hog reaches MemoryMax; the
kernel OOM-kills it inside alice's unit (the unit stays active); the agent
reports one memcg OOM kill for alice from BPF, and a `would kill` decision
(action `observed`) before it."""

import time

from vmlib import (active_state, cg_keyed, child_exit, events, hog_argv, main_pid, metric, metric_delta,
                   metrics, pid_in_cgroup, spawn_in_unit, start_user, wait_for)

NAME = "runaway_observe"
MODE = "observe"
TIMEOUT = 240
DESCRIPTION = "same hog in observe mode: kernel memcg OOM; agent logs would-kill then oom_kill"


def run(hb, res):
    alice = start_user("alice", fresh=True)
    start_user("bob")
    ev0 = cg_keyed("alice", "memory.events")
    m0 = metrics()
    t0 = time.time()
    pid = spawn_in_unit("alice", hog_argv("alice", rate_mb=25, cap_mb=640, max_seconds=120), "hog")
    res.infra("hog runs inside alice's unit", "in t3-serve@alice.service", f"pid {pid}", pid_in_cgroup(pid, "alice"))
    rc = wait_for(lambda: child_exit("alice", "hog") is not None, 150, step=0.2) and child_exit("alice", "hog")
    t_dead = time.time()
    time.sleep(3)
    ev1 = cg_keyed("alice", "memory.events")
    m1 = metrics()
    oom = ev1.get("oom_kill", 0) - ev0.get("oom_kill", 0)
    res.note(hog_pid=pid, hog_rc=rc, memory_events=ev1)
    res.infra("kernel OOM-killed the hog in alice's unit", "rc -9, memory.events oom_kill >= +1",
              f"rc {rc}, oom_kill +{oom}", rc == -9 and oom >= 1)
    res.infra("alice's unit survives the OOM (OOMPolicy=continue)", f"active, MainPID {alice}",
              f"{active_state('alice')}, MainPID {main_pid('alice')}",
              active_state("alice") == "active" and main_pid("alice") == alice)
    ooms = events(t0, "oom_kill", "alice")
    res.agent("one memcg oom_kill event for the hog", f"1 event, pid {pid}, scope memcg",
              [(e.get("pid"), e.get("scope")) for e in ooms],
              len(ooms) == 1 and ooms[0].get("pid") == pid and ooms[0].get("scope") == "memcg")
    d = metric_delta(m0, m1, "t3pressure_oom_kills_total", user="alice", scope="memcg")
    res.agent("oom_kills_total{alice,memcg}", "+1", d, d == 1)
    bpf = metric(m1, "t3pressure_bpf_loaded")
    res.agent("OOM seen from BPF", "t3pressure_bpf_loaded 1", bpf, bpf == 1)
    t_oom = ooms[0]["ts"] if ooms else t_dead
    obs = [e for e in events(t0, "runaway", "alice") if e.get("action") == "observed"]
    before = [e for e in obs if e.get("ts", 0) <= t_oom and e.get("pid") == pid]
    res.agent("`would kill` (observed) decision before the OOM kill", f">= 1 observed event for pid {pid} before the OOM",
              f"{len(before)} of {len(obs)} observed event(s)", len(before) >= 1)
    killed = [e for e in events(t0, "runaway") if e.get("action") == "killed"]
    res.agent("observe mode kills nothing", "0 killed events", len(killed), not killed)
