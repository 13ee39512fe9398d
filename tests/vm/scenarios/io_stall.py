"""Scenario 3, IO stall: alice's serve blocks on uncached reads on its event
loop while her unit's io.max throttles reads of the disk to 1 MiB/s, for
about 25 s. The agent records one `disconnect` window for alice, cause io,
whose duration is within 10 % (or 2 s) of the heartbeat client's longest
gap; bob has none.

A real Prometheus (prom.py: the package's scrape.yml and alerts.yml) scrapes
the agent throughout: its T3PressureDisconnect alert must become pending or
firing for alice, never for bob."""

import os
import subprocess
import time

from prom import AlertWatch, Prometheus, query
from vmlib import base_dir, events, read_text, start_user, systemctl, trigger, unit, cg_path, wait_for

NAME = "io_stall"
MODE = "enforce"
TIMEOUT = 240
ALERT = "T3PressureDisconnect"
DESCRIPTION = "alice's serve blocks ~25 s on reads throttled by io.max; agent: disconnect window, cause io"

READ_MIB = 25


def run(hb, res):
    with Prometheus() as prom:
        took, up, rules = prom.wait_scraping(60)
        res.infra("Prometheus scrapes the agent with the packaged rules", f"up 1, rule {ALERT} loaded",
                  f"up {up} after {took:.1f} s, {len(rules)} rules{'' if ALERT in rules else ', ' + ALERT + ' missing'}",
                  up == "1" and ALERT in rules)
        with AlertWatch(ALERT) as watch:
            t0, t_end = stall(hb, res)
            # The window counter's arms need it scraped after the window
            # closed; 5 s scrape + 2 s evaluation.
            wait_for(lambda: watch.first("alice") is not None, 20, step=0.5)
            time.sleep(2)
        first = watch.first("alice")
        res.note(alert_states=watch.seen, alert_polls=watch.polls, alert_poll_errors=watch.errors)
        # What Prometheus scraped of the stall while it lasted (the alert's
        # live arm is this gauge >= 20 s), so a missing alert can be told
        # apart from a missing scrape.
        span = f"{int(time.time() - t0) + 5}s"
        seen = query(f'max_over_time(t3pressure_serve_stall_seconds{{user="alice"}}[{span}])')
        seen_s = float(seen[0]["value"][1]) if seen else None
        res.agent("Prometheus scraped alice's ongoing stall", "max t3pressure_serve_stall_seconds >= 10 s",
                  "no series" if seen_s is None else f"{seen_s:.1f} s", seen_s is not None and seen_s >= 10)
        res.agent(f"Prometheus alert {ALERT} for alice", "pending or firing, during the stall or <= 20 s after it",
                  "never" if first is None else
                  f"{'/'.join(sorted(watch.seen['alice']))} from {first - t0:.1f} s after the stall began "
                  f"(stall ended at {t_end - t0:.1f} s)", first is not None)
        res.agent(f"no {ALERT} for bob", "never pending or firing", "/".join(sorted(watch.seen.get("bob", {})))
                  or "never", "bob" not in watch.seen)


def stall(hb, res):
    """The IO stall and its checks; returns (start, end) of the stall."""
    start_user("alice")
    start_user("bob")
    blob = os.path.join(base_dir("alice"), "blob")
    subprocess.run(["dd", "if=/dev/urandom", f"of={blob}", "bs=1M", f"count={READ_MIB + 8}", "status=none"], check=True)
    subprocess.run(["chown", "alice:alice", blob], check=True)
    # Clean pages, so the serve's fadvise(DONTNEED) drops exactly the blob.
    # (No drop_caches: that would also evict the serve's own code pages and
    # make the stall's length depend on Python's refaults.)
    subprocess.run(["sync"], check=True)
    systemctl("set-property", "--runtime", unit("alice"), "IOReadBandwidthMax=/dev/vda 1048576")
    io_max = (read_text(cg_path("alice", "io.max")) or "").strip()
    res.infra("io.max throttles alice's reads", "rbps=1048576", io_max or "absent", "rbps=1048576" in io_max)
    done = os.path.join(base_dir("alice"), "trigger.done")
    n0 = len((read_text(done) or "").splitlines())
    t0 = time.time()
    trigger("alice", {"kind": "io", "path": blob, "bytes": READ_MIB << 20})
    wait_for(lambda: len((read_text(done) or "").splitlines()) > n0, 120, step=0.25)
    systemctl("set-property", "--runtime", unit("alice"), "IOReadBandwidthMax=")
    t_end = time.time()
    time.sleep(4)  # the window closes on the next answer; let the agent log it
    gap, gap_start = hb.longest_gap("alice", t0 - 1, t_end + 3)
    bob_gap, _ = hb.longest_gap("bob", t0 - 1, t_end + 3)
    block = (read_text(done) or "").splitlines()[n0:]
    res.note(alice_gap_s=round(gap, 2), alice_gap_start=gap_start, bob_gap_s=round(bob_gap, 2), block=block)
    res.infra("alice's clients saw a disconnect-class stall", "heartbeat gap >= 20 s", f"{gap:.1f} s", gap >= 20)
    res.infra("bob's serve kept answering", "heartbeat gap < 10 s", f"{bob_gap:.1f} s", bob_gap < 10)
    wins = [e for e in events(t0 - 1, "stall_window", "alice") if e.get("class") == "disconnect"]
    tol = max(0.1 * gap, 2.0)
    best = min(wins, key=lambda e: abs(e.get("duration_s", 0) - gap), default=None)
    res.agent("one disconnect window for alice", "1", len(wins), len(wins) == 1)
    res.agent("window duration matches the heartbeat gap", f"{gap:.1f} s +- {tol:.1f} s",
              "none" if best is None else f"{best.get('duration_s', 0):.1f} s",
              best is not None and abs(best.get("duration_s", 0) - gap) <= tol)
    res.agent("window cause", "io", None if best is None else best.get("cause"),
              best is not None and best.get("cause") == "io")
    bob_w = [e for e in events(t0 - 1, "stall_window", "bob") if e.get("class") in ("warning", "disconnect")]
    res.agent("bob has no window", "0", len(bob_w), not bob_w)
    return t0, t_end
