"""Scenario: a starved serve that answers once in the middle. Burners inside
alice's unit use up its cpu.max quota (1 ms per 1 s) for about 7 s, the quota
is lifted for 100 ms (the serve answers the heartbeat it holds and waits for
the next request), then the starvation goes on for about 7 s more. Alice's
clients see two gaps under 10 s, so the agent must not report a warning
window: its window has to end where the serve's event loop went idle, not
bridge the two starved stretches into one ~14 s window."""

import time

from vmlib import CPU_MAX_STARVED, cg_path, events, read_text, start_user, starve_cpu, unstarve_cpu

NAME = "starved_answer"
MODE = "enforce"
TIMEOUT = 150
DESCRIPTION = "alice starved 7 s, answers in a 100 ms respite, starved 7 s more; agent: no warning window"

HALF_S = 7
RESPITE_S = 0.1
# Both halves have to be real stalls (the serve can win a 1 ms slot and
# answer mid-throttle, see cpu_starvation); retry once if not.
RETRY_IF_INFRA_FAILS = True


def write_cpu_max(value):
    with open(cg_path("alice", "cpu.max"), "w") as f:
        f.write(value)


def run(hb, res):
    start_user("alice")
    start_user("bob")
    pid, t0 = starve_cpu(res, "alice", 2 * HALF_S)
    time.sleep(max(0.0, HALF_S - (time.time() - t0)))
    t_respite = time.time()
    write_cpu_max("max 1000000")
    time.sleep(RESPITE_S)
    write_cpu_max(CPU_MAX_STARVED)
    time.sleep(max(0.0, 2 * HALF_S - (time.time() - t0)))
    t_end = unstarve_cpu("alice")
    time.sleep(4)
    first, first_start = hb.longest_gap("alice", t0 - 1, t_respite + RESPITE_S)
    second, second_start = hb.longest_gap("alice", t_respite, t_end + 3)
    whole, _ = hb.longest_gap("alice", t0 - 1, t_end + 3)
    res.note(burner_pid=pid, respite_at=round(t_respite - t0, 2), alice_gap_before_s=round(first, 2),
             alice_gap_after_s=round(second, 2), alice_gap_s=round(whole, 2),
             cpu_stat=read_text(cg_path("alice", "cpu.stat")))
    res.infra("alice's serve stalled before and after the respite", ">= 4 s each", f"{first:.1f} s, {second:.1f} s",
              first >= 4 and second >= 4)
    res.infra("alice's serve answered in the respite", "longest heartbeat gap < 10 s", f"{whole:.1f} s", whole < 10)
    wins = [e for e in events(t0 - 1, "stall_window", "alice")]
    shown = [(e.get("class"), e.get("cause"), e.get("duration_s")) for e in wins]
    res.agent("no warning or disconnect window for alice", "none", shown,
              not any(e.get("class") in ("warning", "disconnect") for e in wins))
    res.agent("the stalls were seen: a window of >= 3 s for alice", ">= 3 s", shown,
              any((e.get("duration_s") or 0) >= 3 for e in wins))
