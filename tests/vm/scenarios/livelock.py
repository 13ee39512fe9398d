"""Scenario 5, livelock: a hog plateaus at 430 MiB in alice's unit, then the
unit gets a MemoryHigh band below that (384M < 512M MemoryMax, the
configuration the seed unit warns against): the hog sits between high and
max, churning pages so the kernel keeps throttling the unit, never OOM.
The agent detects it within 30 s of the plateau and (enforce) kills the hog;
the serve recovers."""

import json
import os
import signal
import time

from vmlib import (active_state, cg_int, cg_keyed, child_exit, events, fmt_mb, hog_argv, main_pid, read_text,
                   spawn_in_unit, start_user, systemctl, unit, wait_for)

NAME = "livelock"
MODE = "enforce"
TIMEOUT = 360
DESCRIPTION = "hog sits between MemoryHigh=384M and MemoryMax; agent kills it within 30 s"

STATUS = "/run/t3vm/livelock-hog.json"


def full_total(user):
    for line in (read_text(f"/sys/fs/cgroup/system.slice/system-t3\\x2dserve.slice/t3-serve@{user}.service/memory.pressure") or "").splitlines():
        if line.startswith("full"):
            return int(line.rsplit("total=", 1)[1])
    return None


def run(hb, res):
    alice = start_user("alice", fresh=True)
    ev0 = cg_keyed("alice", "memory.events")
    t0 = time.time()
    # The hog first grows to its plateau (430 MiB) under a raised MemoryMax,
    # then the seed's 512M limit comes back with the band under it: growing
    # through the band would itself take minutes under TCG (the kernel
    # throttles every charge above high), and growing at 40 MiB/s past 75 %
    # of 512M is, rightly, a projected runaway the agent kills in enforce
    # mode before any livelock exists.
    systemctl("set-property", "--runtime", unit("alice"), "MemoryMax=1G")
    pid = spawn_in_unit("alice", hog_argv("alice", rate_mb=40, cap_mb=640, max_seconds=150, plateau_mb=430,
                                         churn_mb=8, status=STATUS), "hog")

    def status():
        try:
            return json.loads(read_text(STATUS) or "")
        except ValueError:
            return None

    st = wait_for(lambda: (status() or {}).get("plateau_since") and status(), 90, step=0.25)
    res.infra("hog reached its plateau", "about 430 MiB", "never" if not st else f"{st.get('allocated_mb')} MiB after "
              f"{st['plateau_since'] - t0:.1f} s", bool(st))
    # Let the growth leave the agent's 10-sample slope window: a plateau.
    time.sleep(10)
    systemctl("set-property", "--runtime", unit("alice"), "MemoryMax=512M", "MemoryHigh=384M")
    t_band = time.time()
    high, current = cg_int("alice", "memory.high"), cg_int("alice", "memory.current")
    res.infra("unit stuck between memory.high and memory.max", "high 384 MiB < current < max 512 MiB",
              f"high {fmt_mb(high)}, current {fmt_mb(current)}",
              high == 384 << 20 and current is not None and high < current < 512 << 20)
    full0 = full_total("alice")
    # The agent has 30 s; give it 60, then end the livelock ourselves.
    rc = wait_for(lambda: child_exit("alice", "hog") is not None, 60, step=0.25) and child_exit("alice", "hog")
    t_dead = time.time()
    if rc is False:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: child_exit("alice", "hog") is not None, 30, step=0.25)
        res.note(runner_killed_hog_at=time.time())
    full1 = full_total("alice")
    stalled = None if full0 is None or full1 is None else (full1 - full0) / 1e6
    res.infra("the band stalls the unit", "memory full pressure > 0 s while the hog sits in it",
              "n/a" if stalled is None else f"{stalled:.1f} s in {t_dead - t_band:.0f} s",
              stalled is not None and stalled > 0)
    ev1 = cg_keyed("alice", "memory.events")
    oom = ev1.get("oom_kill", 0) - ev0.get("oom_kill", 0)
    ll = [e for e in events(t0, "runaway", "alice") if e.get("reason") == "livelock" and e.get("action") == "killed"]
    took = ll[0]["ts"] - t_band if ll else None
    res.note(hog_pid=pid, hog_rc=rc, memory_events=ev1, full_stall_s=stalled,
             livelock_gap_s=round(hb.longest_gap("alice", t_band, t_dead)[0], 2))
    res.agent("livelock detected and the hog killed", "killed (reason livelock) within 30 s of the band",
              "no event" if took is None else f"after {took:.1f} s", took is not None and took <= 30)
    # Later scenarios start from the seed unit's configuration: no band.
    systemctl("set-property", "--runtime", unit("alice"), "MemoryHigh=infinity", "MemoryMax=512M")
    res.agent("killed by the agent, not the kernel", "rc -9, oom_kill +0", "still running after 60 s (runner killed it)" if rc is False else f"rc {rc}, oom_kill +{oom}",
              rc == -9 and oom == 0)
    t_end = time.time()
    time.sleep(5)
    gap_after, _ = hb.longest_gap("alice", t_end + 1, time.time())
    res.agent("the serve recovers", f"MainPID {alice} answers, gap < 2 s after the hog's end",
              f"{active_state('alice')}, MainPID {main_pid('alice')}, gap {gap_after:.1f} s",
              main_pid("alice") == alice and gap_after < 2)
