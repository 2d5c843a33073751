#!/usr/bin/python3
"""Threshold against a Node application service on the same machine and load.

The peer (bench/peer/peer.js) is matrix-appservice from npm, the HTTP layer of
matrix-appservice-bridge, appending one JSON audit line per decision and
fsyncing it before it answers.  Threshold is the release binary (`threshold
serve`), its homeserver the scripted fake (tests/integration/fakehs.py), which
answers the outbox at once; `--homeserver none` points it at a closed port
instead, so its rejects wait in the outbox with back-off.

Both get the same transactions, byte for byte, over one keep-alive HTTP
connection with one transaction in flight, as Synapse sends them:

  msgs100   100-event transactions, text messages in a few rooms only;
  dec100    100-event transactions, one event in ten a stranger's invite of a
            fresh id of the guests' namespace into a room of the stranger's (a
            decision: Threshold refuses it, appends an audit record and queues
            a reject; the peer writes and fsyncs an audit line), the other nine
            text messages;
  one       one-event transactions, every tenth one such an invite.

Rounds alternate between the two (Threshold first in even rounds, the peer
first in odd ones) so that a drift of the disk's speed hits both alike.  Per
phase and daemon it prints the median over the rounds of transactions/s and
events/s, p50/p99 of the ack latency over all rounds (request written to
answer read), CPU ms and KiB handed to the kernel (`wchar`) per transaction,
and the median of the rounds' Threshold/peer ratios of events/s, against the
budget (dec100: at least 2x).

A measurement, not a test: it exits 0 unless the set-up fails.

    bench/peer_compare.py [--rounds 9] [--quick] [--no-build] [--homeserver fake|none]
                          [--dir DIR] [--keep]

Needs `npm ci --prefix bench/peer` first.  Only the standard library.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEER_DIR = os.path.join(HERE, "peer")
SERVER = "localhost"
REMOTE = "elsewhere.example"
TXN_PATH = "/_matrix/app/v1/transactions/"
MSG_ROOMS = 5
BUDGET_DEC100 = 2.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the load ---------------------------------------------------------------------


class Load:
    """Event ids and guest ids that never repeat in one run."""

    def __init__(self):
        self.n = 0
        self.ts = int(time.time() * 1000)

    def event(self, decision):
        self.n += 1
        n = self.n
        if decision:
            return {
                "type": "m.room.member",
                "room_id": "!theirs%d:%s" % (n % 20, REMOTE),
                "sender": "@stranger%d:%s" % (n % 97, REMOTE),
                "state_key": "@guest_%032x:%s" % (n, SERVER),
                "event_id": "$%020d_invite_abcdefghijklmnopqrstuvwxyz" % n,
                "origin_server_ts": self.ts + n,
                "content": {"membership": "invite"},
                "unsigned": {"age": 1},
            }
        return {
            "type": "m.room.message",
            "room_id": "!room%d:%s" % (n % MSG_ROOMS, SERVER),
            "sender": "@member%d:%s" % (n % 7, SERVER),
            "event_id": "$%020d_message_abcdefghijklmnopqrstuvwxyz" % n,
            "origin_server_ts": self.ts + n,
            "content": {"msgtype": "m.text",
                        "body": "A message of about the length people write, number %d." % n},
            "unsigned": {"age": 1},
        }

    def txns(self, count, per, every):
        """@count transaction bodies (bytes) of @per events; event i of the
        run is a decision when @every and i % @every == @every - 1."""
        out = []
        for _ in range(count):
            evs = []
            for _ in range(per):
                decision = bool(every) and (self.n + 1) % every == 0
                evs.append(self.event(decision))
            out.append(json.dumps({"events": evs}, separators=(",", ":")).encode())
        return out


# ---- the daemons ------------------------------------------------------------------


def proc_cpu_io(pid):
    """(CPU seconds, bytes written as wchar) of @pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    wchar = 0
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("wchar:"):
                wchar = int(line.split()[1])
    return cpu, wchar


class Daemon:
    name = "?"

    def __init__(self):
        self.proc = None
        self.port = free_port()
        self.conn = None
        self.hs_token = None

    def connect(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def put(self, txn_id, body):
        """PUT one transaction on the kept connection; the status."""
        self.conn.request("PUT", TXN_PATH + txn_id, body=body, headers={
            "Authorization": "Bearer " + self.hs_token,
            "Content-Type": "application/json"})
        r = self.conn.getresponse()
        r.read()
        return r.status

    def wait_ready(self, path, method="GET", body=None, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("%s exited %d during start-up; see %s"
                                 % (self.name, self.proc.returncode, self.log_path))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request(method, path, body=body, headers={
                    "Authorization": "Bearer " + (self.hs_token or ""),
                    "Content-Type": "application/json"})
                status = c.getresponse().status
                c.close()
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise SystemExit("%s did not answer within %ds; see %s" % (self.name, timeout, self.log_path))

    def stop(self):
        if self.conn:
            self.conn.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


class Threshold(Daemon):
    name = "threshold"

    def __init__(self, binary, workdir, hs_url):
        super().__init__()
        self.bin = binary
        self.dir = os.path.join(workdir, "threshold")
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "threshold.yaml")
        self.registration = os.path.join(self.dir, "registration.yaml")
        self.log_path = os.path.join(self.dir, "threshold.log")
        with open(self.config, "w") as f:
            f.write(
                "homeserver:\n  url: %s\n  server_name: %s\n"
                "appservice:\n  listen_address: 127.0.0.1\n  listen_port: %d\n"
                "  registration: %s\n  bot_localpart: threshold\n"
                "store:\n  path: %s\n  map_size_mb: 1024\n"
                "client:\n  timeout_ms: 2000\n  connect_timeout_ms: 500\n"
                "  outbox_max_backoff_ms: 5000\n"
                "log:\n  level: warn\n"
                % (json.dumps(hs_url), SERVER, self.port, json.dumps(self.registration),
                   json.dumps(os.path.join(self.dir, "store"))))
        self.run("generate-registration", "--force")
        with open(self.registration) as f:
            text = f.read()
        m = re.search(r"^hs_token:\s*['\"]?([^'\"\s]+)", text, re.M)
        if not m:
            raise SystemExit("no hs_token in %s" % self.registration)
        self.hs_token = m.group(1)

    def run(self, *args):
        r = subprocess.run([self.bin, "-c", self.config, *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit("threshold %s exited %d: %s" % (" ".join(args), r.returncode,
                                                              r.stderr[-2000:]))
        return r.stdout

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.bin, "-c", self.config, "serve"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.wait_ready("/_matrix/app/v1/ping", "POST", b'{"transaction_id":"bench-ping"}')
        self.connect()

    def decisions(self):
        out = self.run("audit", "list", "--kind", "contact_blocked", "--format", "jsonl")
        return sum(1 for line in out.splitlines() if line.strip())


class Peer(Daemon):
    name = "peer"

    def __init__(self, workdir, hs_token, sync):
        super().__init__()
        self.dir = os.path.join(workdir, "peer")
        os.makedirs(self.dir)
        self.audit = os.path.join(self.dir, "audit.jsonl")
        self.log_path = os.path.join(self.dir, "peer.log")
        self.hs_token = hs_token
        self.sync = sync
        self.counts = None

    def start(self):
        env = dict(os.environ, PEER_PORT=str(self.port), PEER_HS_TOKEN=self.hs_token,
                   PEER_AUDIT=self.audit, PEER_SYNC=self.sync,
                   PEER_NAMESPACE="^@guest_.*:%s$" % re.escape(SERVER))
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["node", os.path.join(PEER_DIR, "peer.js")],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     env=env, cwd=PEER_DIR)
        self.wait_ready("/health")
        self.connect()

    def decisions(self):
        with open(self.audit, "rb") as f:
            return sum(1 for _ in f)


# The fake homeserver in a process of its own, so that answering Threshold's
# outbox does not take the driver's interpreter lock from under its clock.
FAKEHS_MAIN = r"""
import json, re, signal, sys, threading
sys.path.insert(0, sys.argv[1])
from fakehs import FakeHomeserver
hs = FakeHomeserver("localhost").start()
print(hs.url, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
counts = {}
for r in hs.seen():
    k = "%s %s" % (r.method, re.sub(r"^/_matrix/client/v\d+/(rooms/[^/]+/)?", "", r.path).split("/")[0])
    counts[k] = counts.get(k, 0) + 1
print(json.dumps(counts), flush=True)
"""


class FakeHs:
    def __init__(self, workdir):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FAKEHS_MAIN, os.path.join(ROOT, "tests", "integration")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise SystemExit("the fake homeserver did not start")

    def stop(self):
        """Stop it; the requests it answered, counted by kind."""
        if self.proc.poll() is not None:
            return {}
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}


# ---- measuring --------------------------------------------------------------------


def measure(daemon, prefix, bodies, per):
    """Send @bodies one at a time; the round's figures."""
    lat = []
    cpu0, w0 = proc_cpu_io(daemon.proc.pid)
    t0 = time.perf_counter()
    for i, body in enumerate(bodies):
        s = time.perf_counter()
        status = daemon.put("%s-%d" % (prefix, i), body)
        lat.append(time.perf_counter() - s)
        if status != 200:
            raise SystemExit("%s answered %d to transaction %s-%d" % (daemon.name, status, prefix, i))
    wall = time.perf_counter() - t0
    cpu1, w1 = proc_cpu_io(daemon.proc.pid)
    n = len(bodies)
    return {"txn_s": n / wall, "ev_s": n * per / wall, "lat": lat,
            "cpu_ms": (cpu1 - cpu0) * 1000 / n, "kib": (w1 - w0) / 1024 / n}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds per phase (9; --quick 3)")
    ap.add_argument("--txns100", type=int, default=None,
                    help="100-event transactions per round and daemon (300; --quick 50)")
    ap.add_argument("--txns1", type=int, default=None,
                    help="one-event transactions per round and daemon (1000; --quick 200)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-release", "threshold"))
    ap.add_argument("--homeserver", choices=("fake", "none"), default="fake")
    ap.add_argument("--peer-sync", choices=("each", "none"), default="each",
                    help="the peer's fsync per decision (none: to see what it costs)")
    ap.add_argument("--dir", default=None, help="where the stores go (default $TMPDIR)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    rounds = a.rounds or (3 if a.quick else 9)
    n100 = a.txns100 or (50 if a.quick else 300)
    n1 = a.txns1 or (200 if a.quick else 1000)

    if not os.path.isdir(os.path.join(PEER_DIR, "node_modules", "matrix-appservice")):
        raise SystemExit("the peer's packages are missing: npm ci --prefix bench/peer")
    if not a.no_build:
        subprocess.run(["cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build-release"),
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", os.path.join(ROOT, "build-release"), "-j2",
                        "--target", "threshold"], check=True, stdout=subprocess.DEVNULL)

    work = tempfile.mkdtemp(prefix="peer-compare-", dir=a.dir)
    hs = None
    daemons = []
    try:
        if a.homeserver == "fake":
            hs = FakeHs(work)
            hs_url = hs.url
        else:
            hs_url = "http://127.0.0.1:%d" % free_port()
        th = Threshold(a.bin, work, hs_url)
        peer = Peer(work, th.hs_token, a.peer_sync)
        th.start()
        peer.start()
        daemons = [th, peer]

        load = Load()
        # A warm-up neither is measured on: connections, caches, the JIT.
        warm = load.txns(20, 100, 10)
        for d in daemons:
            measure(d, "warm", warm, 100)

        phases = [("msgs100", 100, 0, n100), ("dec100", 100, 10, n100), ("one", 1, 10, n1)]
        res = {(p[0], d.name): [] for p in phases for d in daemons}
        sent_decisions = 0
        for r in range(rounds):
            for name, per, every, count in phases:
                bodies = load.txns(count, per, every)
                if every:
                    sent_decisions += count * per // every
                order = daemons if r % 2 == 0 else daemons[::-1]
                for d in order:
                    res[(name, d.name)].append(measure(d, "r%d-%s" % (r, name), bodies, per))
            print("round %d/%d done" % (r + 1, rounds), file=sys.stderr, flush=True)
        # The decisions made during the warm-up count too.
        sent_decisions += 20 * 100 // 10

        th.stop()
        peer.stop()
        got = {"threshold": th.decisions(), "peer": peer.decisions()}
        hs_answered = hs.stop() if hs else {}
        hs = None
        report(res, phases, rounds, a, got, sent_decisions, hs_answered)
    finally:
        for d in daemons:
            d.stop()
        if hs:
            hs.stop()
        if a.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(res, phases, rounds, a, got, sent, hs_answered):
    print()
    print("Threshold vs the Node peer (matrix-appservice, fsync per decision: %s), one "
          "transaction in flight, %d rounds, homeserver: %s" % (a.peer_sync, rounds, a.homeserver))
    print()
    hdr = "%-8s %-9s | %8s %9s %7s %7s %7s %8s" % ("phase", "daemon", "txn/s", "events/s",
                                                    "p50 ms", "p99 ms", "CPU ms", "KiB/txn")
    print(hdr)
    print("-" * len(hdr))
    ratios = {}
    for name, per, every, _ in phases:
        for who in ("threshold", "peer"):
            rs = res[(name, who)]
            lat = [x for r in rs for x in r["lat"]]
            print("%-8s %-9s | %8.0f %9.0f %7.2f %7.2f %7.2f %8.1f" % (
                name, who, statistics.median(r["txn_s"] for r in rs),
                statistics.median(r["ev_s"] for r in rs), pct(lat, 50) * 1000,
                pct(lat, 99) * 1000, statistics.median(r["cpu_ms"] for r in rs),
                statistics.median(r["kib"] for r in rs)))
        per_round = [t["ev_s"] / p["ev_s"] for t, p in zip(res[(name, "threshold")],
                                                           res[(name, "peer")])]
        ratios[name] = per_round
    print()
    for name, per_round in ratios.items():
        line = "%-8s Threshold/peer %.2fx (median of rounds; rounds %s)" % (
            name, statistics.median(per_round), " ".join("%.2f" % x for x in per_round))
        if name == "dec100":
            line += "  budget >= %.1fx: %s" % (BUDGET_DEC100, "met" if statistics.median(
                per_round) >= BUDGET_DEC100 else "NOT MET")
        print(line)
    print()
    print("Threshold per round, first to last (does the cost grow with the store?):")
    for name, _, _, _ in phases:
        rs = res[(name, "threshold")]
        print("%-8s CPU ms %s | KiB %s" % (name, " ".join("%.2f" % r["cpu_ms"] for r in rs),
                                         " ".join("%.0f" % r["kib"] for r in rs)))
    print()
    print("decisions sent %d; recorded: threshold %d (audit contact_blocked), peer %d (lines)"
          % (sent, got["threshold"], got["peer"]))
    if a.homeserver == "fake":
        print("requests Threshold's outbox made to the fake homeserver: %s"
              % ", ".join("%s %d" % kv for kv in sorted(hs_answered.items())))


if __name__ == "__main__":
    main()
