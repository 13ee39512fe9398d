#!/usr/bin/env python3
"""Does every privileged thing t3pressure needs, once, and prints one JSON
object: operation -> "ok" or the errno name. tests/tests/deploy.rs runs it as
an unprivileged user with exactly the capabilities of
deploy/systemd/t3pressure.service (setpriv), to show the unit's capability
set is enough, and without each capability in turn, to show each is needed.

Usage: caps_probe.py TARGET_PID   (a process of another user, to be killed)
"""
import ctypes
import errno
import json
import os
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

SYS_bpf = 321
SYS_perf_event_open = 298
SYS_pidfd_open = 434
SYS_pidfd_send_signal = 424
SYS_process_mrelease = 448
BPF_MAP_CREATE = 0
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_TRACEPOINT = 5
PERF_TYPE_TRACEPOINT = 2
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_EVENT_IOC_ENABLE = 0x2400
MCL_CURRENT, MCL_FUTURE = 1, 2
TRACEFS = "/sys/kernel/tracing/events/sched/sched_switch"

results = {}


class Fail(Exception):
    pass


def check(rc):
    if rc < 0:
        raise Fail(errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())))
    return rc


def step(name, fn):
    try:
        value = fn()
        results[name] = "ok"
        return value
    except Fail as e:
        results[name] = str(e)
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
    return None


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    return check(libc.syscall(SYS_bpf, cmd, buf, 128))


def map_create():
    return bpf(BPF_MAP_CREATE, struct.pack("IIII", BPF_MAP_TYPE_ARRAY, 4, 8, 1))


def prog_load(prog_type=BPF_PROG_TYPE_TRACEPOINT):
    # r0 = 0; exit
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
    license = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("IIQQIIQI", prog_type, 2,
                       ctypes.addressof(insns), ctypes.addressof(license), 0, 0, 0, 0)
    return bpf(BPF_PROG_LOAD, attr)


def raw_tracepoint_attach():
    # BPF_RAW_TRACEPOINT_OPEN does not go through perf_event_open, so
    # Debian's perf_event_paranoid=3 (CAP_SYS_ADMIN for any perf event)
    # does not apply to it.
    prog = prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT)
    name = ctypes.create_string_buffer(b"sched_switch")
    return bpf(BPF_RAW_TRACEPOINT_OPEN, struct.pack("QI", ctypes.addressof(name), prog))


def attach(prog_fd, tp_id):
    attr = ctypes.create_string_buffer(struct.pack("IIQQQQQ", PERF_TYPE_TRACEPOINT, 128, tp_id, 1, 1 << 10, 0, 0), 128)
    fd = check(libc.syscall(SYS_perf_event_open, attr, -1, 0, -1, 8))
    check(libc.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd))
    check(libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0))
    return fd


def read(path):
    with open(path) as f:
        return f.read()


def main():
    target = int(sys.argv[1])
    tp_format = step("tracefs_format", lambda: read(TRACEFS + "/format"))
    tp_id = step("tracefs_id", lambda: int(read(TRACEFS + "/id")))
    step("bpf_map_create", map_create)
    prog = step("bpf_prog_load_tracepoint", prog_load)
    if prog is not None and tp_id is not None:
        step("perf_event_attach_tracepoint", lambda: attach(prog, tp_id))
    else:
        results["perf_event_attach_tracepoint"] = "skipped"
    step("bpf_raw_tracepoint_attach", raw_tracepoint_attach)
    step("read_proc_pressure_meminfo", lambda: (read("/proc/pressure/memory"), read("/proc/meminfo")))
    step("read_other_user_status", lambda: read(f"/proc/{target}/status"))
    step("read_other_user_smaps_rollup", lambda: read(f"/proc/{target}/smaps_rollup"))
    step("read_other_user_exe", lambda: os.readlink(f"/proc/{target}/exe"))
    pidfd = step("pidfd_open_other_user", lambda: check(libc.syscall(SYS_pidfd_open, target, 0)))
    if pidfd is not None:
        step("pidfd_send_sigkill_other_user",
             lambda: check(libc.syscall(SYS_pidfd_send_signal, pidfd, 9, None, 0)))
        # The victim is dying (or already dead): process_mrelease either reaps
        # it (ok) or says there is nothing left (ESRCH/EINVAL); only EPERM
        # would mean a missing privilege.
        def mrelease():
            try:
                check(libc.syscall(SYS_process_mrelease, pidfd, 0))
            except Fail as e:
                if str(e) not in ("ESRCH", "EINVAL"):
                    raise
        step("process_mrelease", mrelease)
    step("mlockall", lambda: check(libc.mlockall(MCL_CURRENT | MCL_FUTURE)))
    results["_uid"] = os.getuid()
    results["_perf_event_paranoid"] = read("/proc/sys/kernel/perf_event_paranoid").strip()
    results["_tracefs_format_bytes"] = len(tp_format or "")
    print(json.dumps(results, sort_keys=True))


main()
