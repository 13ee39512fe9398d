#!/usr/bin/python3
"""Memory hog (a runaway "AI agent") for the scenario VM. Always capped.

    hog.py --expect-cgroup REL [--join] --rate-mb R --cap-mb C
           [--plateau-mb P --churn-mb K] --max-seconds T [--status FILE]

Started by the stand-in serve (so it is the serve's child, inside its unit,
as the unit's user) or, with --join, by root, writing its own pid to
/sys/fs/cgroup/REL/cgroup.procs first. Either way it checks /proc/self/cgroup
before allocating anything and exits 3 if it is not in REL: a hog outside the
unit's MemoryMax is a box-wide OOM (see toolchain.md).

Grows anon memory by R MiB/s (4 MiB anonymous mappings, MAP_POPULATE: the
kernel faults them in at once, much cheaper under TCG than touching pages) up to C MiB (never
more than HARD_CAP_MB), or up to P MiB and then churns K MiB (free, allocate
again) so the cgroup keeps charging pages above memory.high: the livelock.
Exits after T seconds.
"""

import argparse
import json
import mmap
import os
import sys
import time

HARD_CAP_MB = 1024
STEP_MB = 4


def chunk():
    return mmap.mmap(-1, STEP_MB << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)


def own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--expect-cgroup", required=True, help="cgroup path relative to /sys/fs/cgroup, leading /")
    p.add_argument("--join", action="store_true")
    p.add_argument("--rate-mb", type=float, required=True)
    p.add_argument("--cap-mb", type=int, required=True)
    p.add_argument("--plateau-mb", type=int)
    p.add_argument("--churn-mb", type=int, default=8)
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--status")
    a = p.parse_args()

    want = "/" + a.expect_cgroup.strip("/")
    if a.join:
        procs = "/sys/fs/cgroup" + want + "/cgroup.procs"
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        except OSError as e:
            print(f"hog: cannot join {procs}: {e}", file=sys.stderr)
            return 3
    got = own_cgroup()
    if got != want:
        print(f"hog: in cgroup {got!r}, expected {want!r}; refusing to allocate", file=sys.stderr)
        return 3
    cap = min(a.cap_mb, HARD_CAP_MB)
    target = min(a.plateau_mb, cap) if a.plateau_mb else cap

    def status(**kw):
        if a.status:
            tmp = a.status + ".tmp"
            with open(tmp, "w") as f:
                json.dump(dict(pid=os.getpid(), cgroup=got, t=time.time(), **kw), f)
            os.replace(tmp, a.status)

    chunks = []
    plateau_since = None
    t0 = time.time()
    status(allocated_mb=0, phase="grow")
    while time.time() - t0 < a.max_seconds:
        have = len(chunks) * STEP_MB
        due = min(target, a.rate_mb * (time.time() - t0))
        if have + STEP_MB <= due:
            chunks.append(chunk())
            status(allocated_mb=have + STEP_MB, phase="grow")
            continue
        if have + STEP_MB > target and a.plateau_mb:
            if plateau_since is None:
                plateau_since = time.time()
                status(allocated_mb=have, phase="plateau", plateau_since=plateau_since)
            # Churn: give back K MiB and take it again, charging the cgroup
            # above memory.high over and over.
            n = max(1, a.churn_mb // STEP_MB)
            for c in chunks[-n:]:
                c.close()
            del chunks[-n:]
            for _ in range(n):
                chunks.append(chunk())
            time.sleep(0.05)
            continue
        time.sleep(0.02)
    status(allocated_mb=len(chunks) * STEP_MB, phase="done", plateau_since=plateau_since)
    return 0


if __name__ == "__main__":
    sys.exit(main())
