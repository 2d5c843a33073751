"""Process death (SIGKILL) while guests use the gateway and the homeserver
sends transactions: nothing a guest was told is kept is lost or doubled.

Each cycle starts Threshold on one store and, at the same time:

  - one thread sends AS transactions (invites of the bot from another server:
    one contact_blocked record per event), as test_audit_crash.py does;
  - two "guests' browsers" redeem a service's public entry link and send
    messages with local ids, on new conversations and on ones started in
    earlier cycles (their sessions must outlive every restart);

and SIGKILLs the daemon 50 to 400 ms in.  A gateway answer 200 (redeem) or
202 (send), or an AS answer 200, is acknowledged.  The homeserver is a fake
(tests/integration/fakehs.py) that makes the rooms and takes the messages,
deduplicating on the Matrix transaction id as Synapse does.  After the
restart:

  - `threshold audit verify` exits 0;
  - every acknowledged session still answers GET /session with its pseudonym;
  - the page resends every unacknowledged message with the same local id (as
    the guest page does), and a few acknowledged ones too; each answer is 202;
  - once the outbox has drained, every acknowledged local id reached the
    homeserver exactly once (one Matrix transaction id), and no local id
    twice;
  - every acknowledged AS event is in exactly one contact_blocked record;
  - the consent and conversation_opened records number at least the
    acknowledged redeems and at most the attempted ones.

Environment:
  THRESHOLD_CRASH_CYCLES  cycles (default 20, about 20 s; 200 for the long run, about 6.5 min)
  THRESHOLD_CRASH_SEED    the random seed, to repeat a run (printed with each result)
"""

import collections
import http.client
import json
import os
import random
import re
import shutil
import tempfile
import threading
import time

import pytest
import requests

from fakehs import FakeHomeserver
from standalone import REMOTE_SERVER, Standalone, free_port, member_event

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))

CYCLES = int(os.environ.get("THRESHOLD_CRASH_CYCLES", "20"))
SEED = int(os.environ.get("THRESHOLD_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))
KILL_MS = (50, 400)
GUEST_THREADS = 2
EVENTS_PER_TXN = 3
AS_PAUSE_S = 0.005
# conv.c remembers the last 32 local ids of a conversation; a resend of an
# older one would be a new message.  Stay inside that window.
MAX_MESSAGES_PER_GUEST = 24
API = "/_threshold/gateway/v1"
INVITER = "@stranger:" + REMOTE_SERVER
SERVICE = "helpline"


class Guest:
    def __init__(self, n):
        self.n = n
        self.session = None
        self.pseudonym = None
        self.sent = []           # local ids attempted, in order
        self.acked = set()       # local ids answered 202


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.guests = []          # every Guest with an acknowledged session
        self.redeems_tried = 0
        self.txns = collections.OrderedDict()  # txn_id -> (body, [event ids])
        self.txn_acked = set()
        self.errors = []
        self.n = 0

    def next_id(self):
        with self.lock:
            self.n += 1
            return self.n


def gw_post(base, path, body, session=None, http=None):
    headers = {"Authorization": "Bearer " + session} if session else {}
    return (http or requests).post(base + API + path, json=body, headers=headers, timeout=10)


def guest_loop(base, ledger, rng, stop):
    """Redeem now and then; otherwise send as an existing guest."""
    http = requests.Session()
    try:
        while not stop.is_set():
            with ledger.lock:
                usable = [g for g in ledger.guests if len(g.sent) < MAX_MESSAGES_PER_GUEST]
            if not usable or rng.random() < 0.25:
                g = Guest(ledger.next_id())
                with ledger.lock:
                    ledger.redeems_tried += 1
                r = gw_post(base, "/redeem", {"service": SERVICE, "consent": {
                    "version": "1", "language": "en", "agreed": True}}, http=http)
                if r.status_code != 200:
                    ledger.errors.append(("redeem", r.status_code, r.text[:200]))
                    return
                j = r.json()
                g.session, g.pseudonym = j["session"], j["pseudonym"]
                with ledger.lock:
                    ledger.guests.append(g)
                continue
            g = rng.choice(usable)
            lid = "c%d-g%d-m%d" % (ledger.next_id(), g.n, len(g.sent))
            with ledger.lock:
                g.sent.append(lid)
            while not stop.is_set():
                r = gw_post(base, "/send", {"local_id": lid, "body": "message " + lid},
                            session=g.session, http=http)
                if r.status_code == 409:  # the room is being made
                    time.sleep(0.02)
                    continue
                if r.status_code != 202:
                    ledger.errors.append(("send", lid, r.status_code, r.text[:200]))
                    return
                with ledger.lock:
                    g.acked.add(lid)
                break
    except (requests.ConnectionError, requests.Timeout):
        return  # the daemon died under us: the request in flight is unacknowledged
    finally:
        http.close()


def as_loop(daemon, ledger, cycle, stop):
    conn = daemon.connection(timeout=10)
    n = 0
    try:
        while not stop.is_set():
            txn_id = "gwcrash-c%d-%d" % (cycle, n)
            events, ids = [], []
            for i in range(EVENTS_PER_TXN):
                eid = "$gwcrash-c%d-t%d-e%d" % (cycle, n, i)
                room = "!gwcrash-c%d-t%d-e%d:%s" % (cycle, n, i, REMOTE_SERVER)
                events.append(member_event(eid, room, INVITER, daemon.bot, "invite"))
                ids.append(eid)
            body = json.dumps({"events": events}).encode()
            n += 1
            with ledger.lock:
                ledger.txns[txn_id] = (body, ids)
            try:
                status, resp = daemon.put_txn(txn_id, body, conn=conn)
            except (OSError, http.client.HTTPException):
                return
            if status != 200:
                ledger.errors.append(("txn", txn_id, status, resp[:200]))
                return
            with ledger.lock:
                ledger.txn_acked.add(txn_id)
            # Each event queues a rejection of the invite: keep the outbox's
            # work (one durable commit per action) within what drains quickly.
            stop.wait(AS_PAUSE_S)
    finally:
        conn.close()


def wait_gateway(base, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(base + API + "/page", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.01)
    raise AssertionError("the gateway did not answer within %ss" % timeout)


def outbox_pending(daemon):
    return json.loads(daemon.run("status", "--json").stdout)["outbox_pending"]


def wait_drained(daemon, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if outbox_pending(daemon) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("%s: the outbox still holds %d actions after %ss"
                         % (what, outbox_pending(daemon), timeout))


def check_verify(daemon, what):
    r = daemon.verify()
    assert r.returncode == 0, "%s: audit verify exited %d:\n%s%s" % (
        what, r.returncode, r.stdout, r.stderr)
    m = re.search(r"records 1\.\.(\d+), (\d+) checkpoint signature\(s\) valid, the newest at seq (\d+)",
                  r.stdout)
    assert m, "%s: unexpected verify output %r" % (what, r.stdout)
    return m


def make_daemon(workdir, hs, gw_port):
    return Standalone(BIN, workdir, audit={"checkpoint_every": 20}, log_level=os.environ.get("THRESHOLD_TEST_LOG_LEVEL", "warn"),
                      map_size_mb=1024, extra={
                          "homeserver": {"url": hs.url, "server_name": "localhost"},
                          "client": {"timeout_ms": 2000, "connect_timeout_ms": 500,
                                     "outbox_max_backoff_ms": 1000},
                          "gateway": {"listen_address": "127.0.0.1", "listen_port": gw_port,
                                      "public_url": "http://127.0.0.1:%d" % gw_port,
                                      "address_rate_per_minute": 100000,
                                      "session_rate_per_minute": 100000,
                                      "public_per_address_per_hour": 10000},
                          "services": {SERVICE: {
                              "display_name": "Test Helpline", "staff_room": "!staff:localhost",
                              "public_entry": True, "public_per_hour": 100000}},
                      }).setup()


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="threshold-gwcrash-")
    yield d
    if os.environ.get("THRESHOLD_KEEP") == "1":
        print("kept %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


def test_sigkill_during_gateway_and_as_traffic_loses_and_doubles_nothing(workdir):
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    rng = random.Random(SEED)
    where = "seed %d (THRESHOLD_CRASH_SEED=%d to repeat), work dir %s" % (SEED, SEED, workdir)
    hs = FakeHomeserver().start()
    gw_port = free_port()
    base = "http://127.0.0.1:%d" % gw_port
    daemon = make_daemon(workdir, hs, gw_port)
    ledger = Ledger()
    stats = collections.Counter()
    t_start = time.monotonic()
    try:
        daemon.start()
        wait_gateway(base)
        for cycle in range(CYCLES):
            stop = threading.Event()
            threads = [threading.Thread(target=as_loop, args=(daemon, ledger, cycle, stop))]
            threads += [threading.Thread(target=guest_loop,
                                         args=(base, ledger, random.Random(rng.random()), stop))
                        for _ in range(GUEST_THREADS)]
            kill_after = rng.uniform(*KILL_MS) / 1000.0
            for t in threads:
                t.start()
            time.sleep(kill_after)
            daemon.kill()
            stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a client thread hung after the kill"
            assert not ledger.errors, "unexpected answers: %r (%s)" % (ledger.errors[:5], where)
            what = "cycle %d (killed after %.0f ms; %s)" % (cycle, kill_after * 1000, where)

            daemon.start()
            wait_gateway(base)
            check_verify(daemon, what + ", after restart")

            # Every acknowledged session works, as the same guest.
            with ledger.lock:
                guests = list(ledger.guests)
            for g in guests:
                r = requests.get(base + API + "/session",
                                 headers={"Authorization": "Bearer " + g.session}, timeout=10)
                assert r.status_code == 200, "%s: an acknowledged session answers %d %s" % (
                    what, r.status_code, r.text)
                assert r.json()["pseudonym"] == g.pseudonym, (what, r.json(), g.pseudonym)

            # The page resends what was not acknowledged, and (harmlessly) a
            # few acknowledged ones, with the same local ids.
            resend = [(g, lid) for g in guests for lid in g.sent if lid not in g.acked]
            stats["unacked_sends"] += len(resend)
            acked = [(g, lid) for g in guests for lid in g.acked]
            resend += rng.sample(acked, min(3, len(acked)))
            for g, lid in resend:
                deadline = time.monotonic() + 20
                while True:
                    r = gw_post(base, "/send", {"local_id": lid, "body": "message " + lid},
                                session=g.session)
                    if r.status_code != 409 or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                assert r.status_code == 202, "%s: resending %s answered %d %s" % (
                    what, lid, r.status_code, r.text)
                g.acked.add(lid)
            stats["resent"] += len(resend)

            # The AS transactions: acknowledged ones recorded once; resend the rest.
            with ledger.lock:
                unacked_txns = [t for t in ledger.txns if t not in ledger.txn_acked]
            for t in unacked_txns:
                status, resp = daemon.put_txn(t, ledger.txns[t][0])
                assert status == 200, "%s: resending %s answered %d" % (what, t, status)
                ledger.txn_acked.add(t)
            stats["unacked_txns"] += len(unacked_txns)

            # Once the outbox drains, each acknowledged message reached the
            # homeserver exactly once.
            wait_drained(daemon, what)
            counts = hs.by_local_id()
            twice = {k: v for k, v in counts.items() if v > 1}
            assert not twice, "%s: messages delivered more than once: %r" % (what, twice)
            missing = [lid for g in guests for lid in g.acked if counts.get(lid) != 1]
            assert not missing, "%s: %d acknowledged message(s) never delivered, e.g. %r" % (
                what, len(missing), missing[:5])

        # The end: a clean stop signs the head; every effect is there once.
        rc = daemon.stop()
        assert rc == 0, "threshold serve exited %s on SIGTERM" % rc
        m = check_verify(daemon, "after the clean stop")
        assert m.group(1) == m.group(3), "the clean stop did not sign the head: %r" % m.group(0)
        recs = daemon.audit_records()
        blocked = collections.Counter(r["details"].get("event_id") for r in recs
                                      if r["kind"] == "contact_blocked")
        sent_events = [e for body, ids in ledger.txns.values() for e in ids]
        bad = [e for e in sent_events if blocked[e] != 1]
        assert not bad, "AS events not recorded exactly once: %r" % bad[:10]
        kinds = collections.Counter(r["kind"] for r in recs)
        assert len(ledger.guests) <= kinds["consent_recorded"] <= ledger.redeems_tried, (
            kinds, len(ledger.guests), ledger.redeems_tried)
        assert kinds["conversation_opened"] == kinds["consent_recorded"], kinds
        assert kinds["startup"] == CYCLES + 1, kinds
        counts = hs.by_local_id()
        assert all(v == 1 for v in counts.values()), counts
        acked_total = sum(len(g.acked) for g in ledger.guests)
        assert sum(1 for g in ledger.guests for lid in g.acked if counts.get(lid) == 1) == acked_total
    finally:
        daemon.kill()
        hs.stop()

    elapsed = time.monotonic() - t_start
    print("\n%d cycles in %.1f s (%s): %d conversations acknowledged of %d redeems tried "
          "(%d more committed unacknowledged); "
          "%d messages acknowledged, %d unacknowledged at a kill and resent, %d resends in all; "
          "%d AS transactions (%d unacknowledged at a kill); %d audit records"
          % (CYCLES, elapsed, where, len(ledger.guests), ledger.redeems_tried,
             kinds["consent_recorded"] - len(ledger.guests), acked_total,
             stats["unacked_sends"], stats["resent"], len(ledger.txns), stats["unacked_txns"],
             len(recs)))
