"""Heartbeat client of the scenario VM: the ground truth a user's browser sees.

Runs outside the t3-serve units (in the runner's own service). One thread per
user polls http://127.0.0.1:<T3_PORT>/heartbeat every 250 ms (the next poll
is sent 250 ms after the previous one was sent, or at once when an answer took
longer) and keeps the time of every answer; the longest gap without an
answer over any interval follows from those times.
"""

import http.client
import threading
import time

POLL_S = 0.25
# A request that blocks this long is a hung server, not a stall to measure.
REQUEST_TIMEOUT_S = 120.0


class UserPoller(threading.Thread):
    def __init__(self, user, port):
        super().__init__(name=f"heartbeat-{user}", daemon=True)
        self.user = user
        self.port = port
        self.answers = []  # wall-clock times of answered heartbeats
        self.errors = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            sent = time.time()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
                conn.request("GET", "/heartbeat", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    with self.lock:
                        self.answers.append(time.time())
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
            delay = POLL_S - (time.time() - sent)
            if delay > 0:
                self.stopping.wait(delay)

    def longest_gap(self, t0, t1):
        """Longest span in [t0, t1] without an answer, and where it started.

        The edges count: a server that never answered after t0 has a gap up
        to t1.
        """
        with self.lock:
            times = [t for t in self.answers if t0 <= t <= t1]
        points = [t0] + times + [t1]
        best, start = 0.0, t0
        for a, b in zip(points, points[1:]):
            if b - a > best:
                best, start = b - a, a
        return best, start


class HeartbeatClient:
    def __init__(self, ports):
        self.pollers = {u: UserPoller(u, p) for u, p in ports.items()}

    def start(self):
        for p in self.pollers.values():
            p.start()

    def stop(self):
        for p in self.pollers.values():
            p.stopping.set()

    def longest_gap(self, user, t0, t1=None):
        return self.pollers[user].longest_gap(t0, time.time() if t1 is None else t1)

    def answered_since(self, user, t0):
        p = self.pollers[user]
        with p.lock:
            return sum(1 for t in p.answers if t >= t0)
