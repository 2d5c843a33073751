#!/usr/bin/python3
"""Guests at full rate for a long time cannot take the store past their share.

Starts the built daemon with a scripted fake homeserver
(tests/integration/fakehs.py) that is slow in cycles: it answers every
outbox request 500 for --fail-seconds, then heals for --heal-seconds, so what
guests send piles up in the store and drains again, over and over.  Meanwhile
--guests guests send messages as fast as the gateway takes them (each its own
client, no pause; the hourly byte budget is lifted so the share is what
binds).  Every 5 s `threshold status --json` gives the store's bytes in use
now (`store_bytes_live`: LMDB's high-water mark less its free list, the
figure the guests' share is judged by) against the map.

At the end the homeserver heals for good and the outbox drains; then every
message the gateway acknowledged (202) must have reached the homeserver
exactly once, and the audit log must verify.

Prints a table: per cycle the highest share of the map in use, the sends
acknowledged and refused (503 TH_UNAVAILABLE, by headroom, or 429), and at
the end the totals and the delivery check.  A measurement: exits 1 only if a
message was lost or repeated, the share was passed by more than the
margin of one message, or the log does not verify.

    bench/headroom_run.py [--minutes 60] [--guests 4] [--share 50] [--map-mb 16]
"""

import argparse
import json
import os
import random
import string
import sys
import tempfile
import threading
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import requests  # noqa: E402
import yaml  # noqa: E402

from fakehs import FakeHomeserver  # noqa: E402
from helpers import wait  # noqa: E402
from standalone import Standalone, free_port  # noqa: E402

API = "/_threshold/gateway/v1"
CONSENT = {"version": "1", "language": "en", "agreed": True}
BODY = 60000


def start(args, work, hs):
    gw_port = free_port()
    d = Standalone(args.bin, work, log_level="warn", map_size_mb=args.map_mb, extra={
        "homeserver": {"url": hs.url, "server_name": "localhost"},
        "client": {"timeout_ms": 2000, "connect_timeout_ms": 500, "outbox_max_backoff_ms": 1000},
        "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                    "public_url": "http://127.0.0.1:%d" % gw_port,
                    "address_rate_per_minute": 100000, "session_rate_per_minute": 100000,
                    "public_per_address_per_hour": 10000, "max_message_bytes": 65536,
                    "max_body_bytes": 131072, "guest_bytes_per_hour": 1073741824},
        "services": {"helpline": {"display_name": "Test Helpline", "staff_room": "!staff:localhost",
                                  "public_entry": True, "public_per_hour": 100000}},
    })
    d.setup()
    with open(d.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["store"]["guest_share_percent"] = args.share
    with open(d.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    base = "http://127.0.0.1:%d" % gw_port
    d.start()
    wait(lambda: requests.get(base + API + "/page", timeout=2).status_code == 200, 10, "the gateway")
    return d, base


class Guest(threading.Thread):
    def __init__(self, base, n, stop):
        super().__init__(daemon=True)
        self.base, self.n, self.stop = base, n, stop
        self.acked, self.refused, self.other = [], 0, {}
        self.rng = random.Random(n)
        self.http = requests.Session()

    def post(self, path, body, session=None):
        headers = {"Authorization": "Bearer " + session} if session else {}
        return self.http.post(self.base + API + path, json=body, headers=headers, timeout=30)

    def run(self):
        while not self.stop.is_set():
            r = self.post("/redeem", {"service": "helpline", "consent": CONSENT})
            if r.status_code == 200:
                break
            time.sleep(1)
        else:
            return
        session = r.json()["session"]
        i = 0
        while not self.stop.is_set():
            lid = "g%d-%d" % (self.n, i)
            body = "".join(self.rng.choice(string.ascii_letters) for _ in range(200))
            body = body * (BODY // 200)
            r = self.post("/send", {"local_id": lid, "body": body}, session)
            if r.status_code == 202:
                self.acked.append(lid)
                i += 1
            elif r.status_code in (503, 429):
                self.refused += 1
                time.sleep(0.05)
            elif r.status_code == 409:  # the room is being made
                time.sleep(0.05)
            else:
                self.other[r.status_code] = self.other.get(r.status_code, 0) + 1
                time.sleep(0.05)


def status(d):
    j = json.loads(d.run("status", "--json").stdout)
    return j["store_bytes_live"], j["store_map_bytes"], j["outbox_pending"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--guests", type=int, default=4)
    ap.add_argument("--share", type=int, default=50)
    ap.add_argument("--map-mb", type=int, default=16)
    ap.add_argument("--fail-seconds", type=float, default=300)
    ap.add_argument("--heal-seconds", type=float, default=60)
    ap.add_argument("--bin", default=os.environ.get("THRESHOLD_BIN",
                                                    os.path.join(ROOT, "build", "threshold")))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="threshold-headroom-run-")
    hs = FakeHomeserver().start()
    d, base = start(args, work, hs)
    stop = threading.Event()
    guests = [Guest(base, n, stop) for n in range(args.guests)]
    bad = []
    try:
        for g in guests:
            g.start()
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        print("%-6s %-7s %8s %8s %9s %9s" % ("cycle", "state", "max%", "outbox", "acked", "refused"))
        cycle, peak_all = 0, 0.0
        while time.monotonic() < end:
            for state, secs in (("slow", args.fail_seconds), ("healed", args.heal_seconds)):
                if state == "slow":
                    hs.fail("500")
                else:
                    hs.heal()
                phase_end = min(end, time.monotonic() + secs)
                peak, pend = 0.0, 0
                a0 = sum(len(g.acked) for g in guests)
                r0 = sum(g.refused for g in guests)
                while time.monotonic() < phase_end:
                    used, size, pend = status(d)
                    peak = max(peak, 100.0 * used / size)
                    time.sleep(5)
                peak_all = max(peak_all, peak)
                print("%-6d %-7s %7.1f%% %8d %9d %9d" % (
                    cycle, state, peak, pend, sum(len(g.acked) for g in guests) - a0,
                    sum(g.refused for g in guests) - r0), flush=True)
                if time.monotonic() >= end:
                    break
            cycle += 1
        stop.set()
        for g in guests:
            g.join(60)
        hs.heal()
        wait(lambda: status(d)[2] == 0, 600, "the outbox draining")
        counts = hs.by_local_id()
        acked = [lid for g in guests for lid in g.acked]
        lost = [lid for lid in acked if counts.get(lid, 0) == 0]
        twice = [lid for lid in acked if counts.get(lid, 0) > 1]
        margin = 100.0 * (BODY * 2) / (args.map_mb * 1048576)
        print()
        print("minutes %.1f, guests %d, share %d%%, map %d MiB" % (
            args.minutes, args.guests, args.share, args.map_mb))
        print("acknowledged %d, refused %d, other answers %s" % (
            len(acked), sum(g.refused for g in guests),
            {k: sum(g.other.get(k, 0) for g in guests) for k in {k for g in guests for k in g.other}}))
        print("highest share of the map in use: %.1f%% (share %d%%, one message %.1f%%)" % (
            peak_all, args.share, margin / 2))
        print("delivered once: %d, lost %d, twice %d" % (len(acked) - len(lost) - len(twice),
                                                         len(lost), len(twice)))
        if lost or twice:
            bad.append("delivery")
        if peak_all > args.share + margin + 5:
            bad.append("share passed")
        d.stop()
        v = d.run("audit", "verify", check=False)
        print("audit verify: exit %d" % v.returncode)
        if v.returncode != 0:
            bad.append("audit verify")
    finally:
        stop.set()
        if d.running():
            d.stop()
        hs.stop()
        shutil.rmtree(work, ignore_errors=True)
    if bad:
        print("FAILED: " + ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
