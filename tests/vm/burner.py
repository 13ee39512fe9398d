#!/usr/bin/python3
"""CPU burner for the CPU-starvation scenario: spins N processes for T
seconds (capped at 60) so they use up the unit's cpu.max quota.

    burner.py --expect-cgroup REL --procs N --seconds T

Checks /proc/self/cgroup first like hog.py: burning outside the unit would
starve the whole VM rather than the unit.
"""

import argparse
import os
import sys
import time


def own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def spin(seconds):
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        for _ in range(10000):
            x += 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--expect-cgroup", required=True)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--seconds", type=float, required=True)
    a = p.parse_args()
    want = "/" + a.expect_cgroup.strip("/")
    if own_cgroup() != want:
        print(f"burner: in cgroup {own_cgroup()!r}, expected {want!r}", file=sys.stderr)
        return 3
    seconds = min(a.seconds, 60.0)
    kids = []
    for _ in range(max(1, min(a.procs, 8)) - 1):
        pid = os.fork()
        if pid == 0:
            spin(seconds)
            os._exit(0)
        kids.append(pid)
    spin(seconds)
    for k in kids:
        os.waitpid(k, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
