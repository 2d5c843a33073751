#!/usr/bin/python3
"""How long a stranger's invite to a guest stands before Threshold rejects it.

Against a real Synapse (the test harness's chroot) and a real Threshold: a
local user who is not staff invites a fresh guest N times (each in a new
room); for each invite the clock runs from the moment the invite request
returns until the guest's membership in that room reads "leave".  Prints
p50/p90/p99/max against the budget in DESIGN.md (p99 <= 1 s).

    bench/invite_latency.py [--threshold build/threshold] [-n 100]

A measurement, not a test: it prints what it saw and exits 0 unless the set-up
itself fails.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse

import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
from synapse import Synapse, free_port  # noqa: E402

SERVER = "localhost"


def q(s):
    return urllib.parse.quote(s, safe="")


def login(hs, name, password):
    r = requests.post(hs.url + "/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
        "password": password}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", default=os.path.join(ROOT, "build", "threshold"))
    ap.add_argument("-n", type=int, default=100)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="threshold-invite-bench-")
    as_port = free_port()
    cfg_path = os.path.join(work, "threshold.yaml")
    reg_path = os.path.join(work, "registration.yaml")
    hs = Synapse(os.path.join(work, "synapse"), registrations=[reg_path], server_name=SERVER)
    cfg = {
        "homeserver": {"url": hs.url, "server_name": SERVER},
        "appservice": {"listen_port": as_port, "registration": reg_path},
        "store": {"path": os.path.join(work, "store"), "map_size_mb": 64},
        "roles": {"staff": ["@staff:" + SERVER]},
        "log": {"level": "warn"},
    }
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f)
    run = lambda *a: subprocess.run([args.threshold, "-c", cfg_path, *a], check=True,  # noqa: E731
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    run("generate-registration")
    daemon = None
    try:
        hs.start()
        password = secrets.token_urlsafe(12)
        hs.register_user("stranger", password)
        token = login(hs, "stranger", password)
        auth = {"Authorization": "Bearer " + token}
        daemon = subprocess.Popen([args.threshold, "-c", cfg_path, "serve"],
                                  stdin=subprocess.DEVNULL, stderr=open(os.path.join(work, "log"), "w"))
        guest = json.loads(run("guest", "create", "--json").stdout)["user_id"]
        # wait until the outbox has registered the guest
        deadline = time.monotonic() + 30
        while True:
            r = requests.get("%s/_matrix/client/v3/profile/%s" % (hs.url, q(guest)), headers=auth,
                             timeout=10)
            if r.status_code in (200, 403):  # 403: exists, profile limited to shared rooms
                break
            if time.monotonic() > deadline:
                raise SystemExit("the guest was never registered")
            time.sleep(0.2)

        lat = []
        for i in range(args.n):
            r = requests.post(hs.url + "/_matrix/client/v3/createRoom", headers=auth,
                              json={"preset": "private_chat"}, timeout=30)
            r.raise_for_status()
            room = r.json()["room_id"]
            r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (hs.url, q(room)),
                              headers=auth, json={"user_id": guest}, timeout=30)
            r.raise_for_status()
            t0 = time.monotonic()
            url = "%s/_matrix/client/v3/rooms/%s/state/m.room.member/%s" % (hs.url, q(room), q(guest))
            while True:
                m = requests.get(url, headers=auth, timeout=10)
                if m.status_code == 200 and m.json().get("membership") == "leave":
                    lat.append(time.monotonic() - t0)
                    break
                if time.monotonic() - t0 > 30:
                    raise SystemExit("invite %d was not rejected within 30 s" % i)
                time.sleep(0.005)
        lat.sort()

        def pct(p):
            return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] * 1000

        print("\nInvite from a stranger to a guest, until rejected (real Synapse, %d invites)\n"
              % len(lat))
        print("%-8s %10s" % ("", "ms"))
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            print("%-8s %10.1f" % (name, pct(p)))
        print("\nbudget: p99 <= 1000 ms: %s\n" % ("ok" if pct(99) <= 1000 else "OVER"))
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait(timeout=20)
        hs.cleanup()


if __name__ == "__main__":
    main()
