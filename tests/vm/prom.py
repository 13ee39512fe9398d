"""A real Prometheus (Debian's `prometheus` package, in the image with its
own unit masked) scraping the packaged agent with the package's
deploy/prometheus/scrape.yml and evaluating its alerts.yml, for the
scenarios that check alerts (io_stall). Started only there: it is a Go
server and TCG is slow.

The VM's copy of scrape.yml differs from the packaged file only in what a VM
must: the target (127.0.0.1:9773 instead of devvm:9773); the job's 5 s scrape
stays. The generated prometheus.yml adds `rule_files` and a 2 s evaluation
interval (the devvm's Prometheus has its own; the default 1 m is too slow to
see the alert within seconds of a 25 s stall). A 1-2 s scrape was tried
first: Prometheus then used ~35 % of a vCPU under TCG (32 s CPU in 92 s) and
scraped the debug agent every second. Every substitution
must match exactly once, so a changed scrape.yml fails loudly instead of
running untested.
"""

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from vmlib import log, read_text, wait_for

PKG_DIR = "/usr/share/doc/t3pressure/prometheus"
WORK = "/var/lib/t3vm-prometheus"
UNIT = "t3vm-prometheus"
ADDR = "127.0.0.1:9090"

SUBSTITUTIONS = [
    ('- targets: ["devvm:9773"]', '- targets: ["127.0.0.1:9773"]'),
]


def config_text():
    scrape = read_text(PKG_DIR + "/scrape.yml")
    if scrape is None or read_text(PKG_DIR + "/alerts.yml") is None:
        raise RuntimeError(f"{PKG_DIR}/scrape.yml or alerts.yml missing: not installed by the package?")
    for old, new in SUBSTITUTIONS:
        n = scrape.count(old)
        if n != 1:
            raise RuntimeError(f"scrape.yml: {old!r} found {n} times, expected once; adapt tests/vm/prom.py")
        scrape = scrape.replace(old, new)
    head = ("# Written by tests/vm/prom.py: the package's scrape.yml, adapted for the VM.\n"
            "global:\n  evaluation_interval: 2s\n"
            f"rule_files:\n  - {PKG_DIR}/alerts.yml\n")
    return head + scrape


def api(path, timeout=3.0):
    try:
        with urllib.request.urlopen(f"http://{ADDR}{path}", timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def query(expr):
    r = api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if not r or r.get("status") != "success":
        return None
    return r["data"]["result"]


class Prometheus:
    """`with Prometheus() as p:` starts it as a transient unit (low CPU
    weight, so it perturbs the scenario little) and stops it afterwards."""

    def __init__(self):
        self.started = False

    def __enter__(self):
        subprocess.run(["systemctl", "stop", UNIT], capture_output=True)
        subprocess.run(["systemctl", "reset-failed", UNIT], capture_output=True)
        subprocess.run(["rm", "-rf", WORK], check=True)
        os.makedirs(WORK + "/data")
        cfg = WORK + "/prometheus.yml"
        with open(cfg, "w") as f:
            f.write(config_text())
        # No `promtool check config` here (57 s under TCG): tests/tests/deploy.rs
        # checks the same splice on the host, and a bad file keeps the target down.
        r = subprocess.run(["systemd-run", f"--unit={UNIT}", "-p", "CPUWeight=20", "-p", "Nice=5",
                            "/usr/bin/prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={WORK}/data",
                            f"--web.listen-address={ADDR}", "--storage.tsdb.retention.time=1h",
                            "--log.level=warn"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"systemd-run prometheus: {r.stderr.strip()}")
        self.started = True
        return self

    def __exit__(self, *exc):
        subprocess.run(["journalctl", "-o", "short-precise", "--no-pager", "-u", UNIT],
                       stdout=open("/share/out/prometheus-journal.txt", "w"), stderr=subprocess.STDOUT)
        subprocess.run(["systemctl", "stop", UNIT], capture_output=True)

    def wait_scraping(self, timeout=60):
        """Waits until the rules are loaded and the agent target is up;
        returns (seconds, up value or None, rule names)."""
        t0 = time.time()

        def ready():
            up = query('up{job="t3pressure"}')
            return bool(up) and up[0]["value"][1] == "1"

        wait_for(ready, timeout, step=0.5)
        up = query('up{job="t3pressure"}')
        rules = api("/api/v1/rules") or {}
        names = [r.get("name") for g in rules.get("data", {}).get("groups", []) for r in g.get("rules", [])]
        return time.time() - t0, (up[0]["value"][1] if up else None), names


class AlertWatch:
    """Polls /api/v1/alerts every 0.5 s in a thread and keeps, per
    (alertname, user), the states seen and when each was first seen."""

    def __init__(self, alertname):
        self.alertname = alertname
        self.seen = {}  # user -> {state: first ts}
        self.polls = 0
        self.errors = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            r = api("/api/v1/alerts", timeout=2.0)
            self.polls += 1
            if not r or r.get("status") != "success":
                self.errors += 1
            else:
                for a in r["data"].get("alerts", []):
                    lab = a.get("labels", {})
                    if lab.get("alertname") != self.alertname:
                        continue
                    states = self.seen.setdefault(lab.get("user", "?"), {})
                    states.setdefault(a.get("state"), time.time())
            self.stop_ev.wait(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join(3)

    def first(self, user):
        """Earliest time the alert was pending or firing for the user."""
        ts = [t for s, t in self.seen.get(user, {}).items() if s in ("pending", "firing")]
        return min(ts) if ts else None


__all__ = ["Prometheus", "AlertWatch", "query", "log"]
