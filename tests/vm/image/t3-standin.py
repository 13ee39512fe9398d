#!/usr/bin/python3
"""Stand-in for `/usr/bin/t3` in the scenario VM: one asyncio event loop that
answers GET /heartbeat, like the Node.js `t3 serve` whose stalls the agent
reports.

    t3 serve --host H --port P --base-dir DIR

Scenarios steer it through DIR/trigger.json (written by the runner as root,
consumed and deleted here, polled every 100 ms on the event loop):

  {"kind": "io", "path": F, "bytes": N}
      read N bytes of F synchronously *on the event loop* after dropping F
      from the page cache, so the loop blocks in D state for as long as the
      unit's io.max lets the read take;
  {"kind": "spawn", "argv": [...], "tag": T}
      start a child process (an "AI agent"), as the real serve does; its pid
      goes to DIR/children/T.pid and its exit status to DIR/children/T.exit.

Every trigger's start and end time goes to DIR/trigger.done.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(prog="t3")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--base-dir", required=True)
    return p.parse_args()


class Serve:
    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.children_dir = os.path.join(base_dir, "children")
        os.makedirs(self.children_dir, exist_ok=True)
        self.started = time.time()
        self.beats = 0

    async def handle(self, reader, writer):
        try:
            line = await reader.readline()
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/heartbeat"):
                self.beats += 1
                body = json.dumps({"ok": True, "t": time.time(), "pid": os.getpid()}).encode()
                status = b"200 OK"
            else:
                body = b'{"error":"not found"}'
                status = b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def io_block(self, path, nbytes):
        """Blocks the event loop on uncached reads (D state)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            done = 0
            while done < nbytes:
                chunk = os.pread(fd, min(1 << 20, nbytes - done), done)
                if not chunk:
                    break
                done += len(chunk)
            return done
        finally:
            os.close(fd)

    def write_atomic(self, name, text):
        path = os.path.join(self.children_dir, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    async def spawn(self, argv, tag):
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        self.write_atomic(tag + ".pid", str(proc.pid))
        rc = await proc.wait()
        self.write_atomic(tag + ".exit", str(rc))

    async def triggers(self):
        path = os.path.join(self.base_dir, "trigger.json")
        while True:
            await asyncio.sleep(0.1)
            try:
                with open(path) as f:
                    trig = json.load(f)
                os.unlink(path)
            except (FileNotFoundError, ValueError):
                continue
            t0 = time.time()
            result = {"kind": trig.get("kind"), "start": t0}
            try:
                if trig["kind"] == "io":
                    result["bytes_read"] = self.io_block(trig["path"], int(trig["bytes"]))
                elif trig["kind"] == "spawn":
                    asyncio.ensure_future(self.spawn(trig["argv"], trig["tag"]))
            except (OSError, KeyError, ValueError) as e:
                result["error"] = repr(e)
            result["end"] = time.time()
            with open(os.path.join(self.base_dir, "trigger.done"), "a") as f:
                f.write(json.dumps(result) + "\n")

    async def main(self, host, port):
        server = await asyncio.start_server(self.handle, host, port, backlog=128)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        asyncio.ensure_future(self.triggers())
        print(f"t3 stand-in: serving on {host}:{port}, base dir {self.base_dir}", flush=True)
        async with server:
            await stop


def main():
    args = parse_args()
    os.makedirs(args.base_dir, exist_ok=True)
    asyncio.run(Serve(args.base_dir).main(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
