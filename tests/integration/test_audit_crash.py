"""Process death (SIGKILL) at a random moment never breaks, loses or doubles
an audit record.

Each cycle starts Threshold on one store, sends AS transactions as fast as it
can from two threads (each transaction a few invites of the bot from another
server: one contact_blocked record per event), and SIGKILLs the daemon 10 to
300 ms in.  A transaction answered 200 is acknowledged: Threshold says it is
durably committed.  After the restart:

  - `threshold audit verify` exits 0 (chain and checkpoint signatures hold);
  - every acknowledged event id is in exactly one contact_blocked record;
  - an unacknowledged transaction is all there or not there at all;
  - no record names an event id that was never sent.

Then the unacknowledged transactions are sent again with the same txnId and
body, as Synapse does, plus a replay of an acknowledged one and its events
under a new txnId; from the next check on, every event id sent must be in
exactly one record.  The run ends with a clean stop, which must sign the log
up to its last record, and a check of the whole log.  (Between full checks,
every FULL_CHECK_EVERY cycles, verify and the listing are incremental.)

No Synapse: the test plays the homeserver (tests/integration/standalone.py).
This covers the death of the process, not power loss: the kernel still
writes back what the process handed it (docs/reliability.md).

Environment:
  THRESHOLD_CRASH_CYCLES  cycles (default 30, about 15 s; 200 for the long run, about 3.5 min)
  THRESHOLD_CRASH_SEED    the random seed, to repeat a run (printed on failure)
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

from standalone import REMOTE_SERVER, Standalone, member_event

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))

CYCLES = int(os.environ.get("THRESHOLD_CRASH_CYCLES", "30"))
SEED = int(os.environ.get("THRESHOLD_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))
SENDERS = 2
EVENTS_PER_TXN = 3
KILL_MS = (10, 300)
FULL_CHECK_EVERY = 10  # cycles between checks of the whole log (the rest are incremental)
INVITER = "@stranger:" + REMOTE_SERVER


class Ledger:
    """What the homeserver side sent, and what Threshold acknowledged."""

    def __init__(self):
        self.lock = threading.Lock()
        self.txns = collections.OrderedDict()  # txn_id -> (body bytes, [event ids])
        self.acked = set()
        self.errors = []  # non-200 answers: always a failure
        self._sent = set()
        self._indexed = 0

    def add(self, txn_id, body, events):
        with self.lock:
            self.txns[txn_id] = (body, events)

    def ack(self, txn_id):
        with self.lock:
            self.acked.add(txn_id)

    def unacked(self):
        with self.lock:
            return [t for t in self.txns if t not in self.acked]

    def events(self, txn_ids):
        return [e for t in txn_ids for e in self.txns[t][1]]

    def sent_events(self):
        """Every event id sent (kept up to date incrementally)."""
        for t in list(self.txns)[self._indexed:]:
            self._sent.update(self.txns[t][1])
        self._indexed = len(self.txns)
        return self._sent


def make_txn(cycle, sender, n):
    """A transaction of EVENTS_PER_TXN invites of the bot by a remote user."""
    txn_id = "crash-c%d-s%d-%d" % (cycle, sender, n)
    events, ids = [], []
    for i in range(EVENTS_PER_TXN):
        eid = "$crash-c%d-s%d-t%d-e%d" % (cycle, sender, n, i)
        room = "!crash-c%d-s%d-t%d-e%d:%s" % (cycle, sender, n, i, REMOTE_SERVER)
        events.append(member_event(eid, room, INVITER, "@threshold:localhost", "invite"))
        ids.append(eid)
    return txn_id, json.dumps({"events": events}).encode(), ids


def sender_loop(daemon, ledger, cycle, sender, stop):
    conn = daemon.connection(timeout=10)
    n = 0
    try:
        while not stop.is_set():
            txn_id, body, ids = make_txn(cycle, sender, n)
            n += 1
            ledger.add(txn_id, body, ids)
            try:
                status, resp = daemon.put_txn(txn_id, body, conn=conn)
            except (OSError, http.client.HTTPException):
                return  # the daemon died under us: this one is unacknowledged
            if status != 200:
                ledger.errors.append((txn_id, status, resp[:200]))
                return
            ledger.ack(txn_id)
    finally:
        conn.close()


class AuditView:
    """The contact_blocked records seen so far, counted by event id.  Fetched
    incrementally (records since a little before the last fetch, merged by
    seq) with a full reread now and then.  `audit list` reads the whole log
    whatever the filter, but the counting here stays linear."""

    MARGIN_S = 5

    def __init__(self, daemon):
        self.daemon = daemon
        self.by_seq = {}
        self.counts = collections.Counter()
        self.last_fetch = None

    def refresh(self, full=False):
        started = time.time()
        filters = []
        if self.last_fetch is not None and not full:
            since = time.gmtime(self.last_fetch - self.MARGIN_S)
            filters = ["--since", time.strftime("%Y-%m-%dT%H:%M:%SZ", since)]
        recs = self.daemon.audit_records(*filters, kind="contact_blocked")
        if full:
            seen = {r["seq"] for r in recs}
            gone = [q for q in self.by_seq if q not in seen]
            assert not gone, "records disappeared: %r" % gone[:10]
        for r in recs:
            old = self.by_seq.get(r["seq"])
            if old is not None:
                assert old == r, "record %d changed: %r -> %r" % (r["seq"], old, r)
                continue
            self.by_seq[r["seq"]] = r
            eid = r["details"].get("event_id")
            self.counts[eid] += 1
            if eid and eid.startswith("$crash-"):
                assert r["actor"] == INVITER, r
                assert r["subject"] == self.daemon.bot, r
                assert r["reason"] == "bot_invite_refused", r
                assert r["room"] and r["room"].startswith("!crash-"), r
        self.last_fetch = started
        return self.counts


def check_verify(daemon, what, from_seq=None):
    """`audit verify` (from @from_seq, trusting the record before it) must exit
    0; returns (output, the last record it checked)."""
    args = ["--from", str(from_seq)] if from_seq else []
    r = daemon.verify(*args)
    assert r.returncode == 0, "%s: audit verify %s exited %d:\n%s%s" % (
        what, " ".join(args), r.returncode, r.stdout, r.stderr)
    m = re.search(r"records (\d+)\.\.(\d+)", r.stdout)
    assert m, "%s: unexpected verify output %r" % (what, r.stdout)
    return r.stdout, int(m.group(2))


def check_exactly_once(ledger, counts, txn_ids, what):
    """Each event of @txn_ids recorded once; no event id twice; none unknown."""
    with ledger.lock:
        sent = ledger.sent_events()
    unknown = [e for e in counts if e is not None and e.startswith("$crash-") and e not in sent]
    assert not unknown, "%s: records for events never sent: %r" % (what, unknown[:10])
    dups = {e: c for e, c in counts.items() if c > 1}
    assert not dups, "%s: event ids recorded more than once: %r" % (what, dict(list(dups.items())[:10]))
    missing = [e for e in ledger.events(txn_ids) if counts[e] != 1]
    assert not missing, "%s: %d acknowledged event(s) not recorded, e.g. %r" % (
        what, len(missing), missing[:10])


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="threshold-crash-")
    yield d
    if os.environ.get("THRESHOLD_KEEP") == "1":
        print("kept %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


def test_sigkill_loop_keeps_audit_log_exact(workdir):
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    rng = random.Random(SEED)
    where = "seed %d (THRESHOLD_CRASH_SEED=%d to repeat), work dir %s" % (SEED, SEED, workdir)
    # Frequent checkpoints, so some kills land while one is being signed.
    daemon = Standalone(BIN, workdir, audit={"checkpoint_every": 20}, log_level="warn",
                        map_size_mb=1024).setup()
    view = AuditView(daemon)
    verified = 0
    ledger = Ledger()
    stats = collections.Counter()
    t_start = time.monotonic()
    try:
        daemon.start()
        for cycle in range(CYCLES):
            stop = threading.Event()
            threads = [threading.Thread(target=sender_loop, args=(daemon, ledger, cycle, s, stop))
                       for s in range(SENDERS)]
            kill_after = rng.uniform(*KILL_MS) / 1000.0
            for t in threads:
                t.start()
            time.sleep(kill_after)
            daemon.kill()
            stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a sender hung after the kill"
            assert not ledger.errors, "non-200 answers: %r (%s)" % (ledger.errors, where)

            what = "cycle %d (killed after %.0f ms; %s)" % (cycle, kill_after * 1000, where)
            daemon.start()
            # The whole chain now and then; otherwise from where the last check ended.
            full = cycle % FULL_CHECK_EVERY == 0
            _, verified = check_verify(daemon, what + ", after restart",
                                       None if full else verified)

            # Before anything is resent: the acknowledged ones are all there, once.
            unacked = ledger.unacked()
            counts = view.refresh(full)
            check_exactly_once(ledger, counts, sorted(ledger.acked), what)
            for txn in unacked:
                present = [counts[e] for e in ledger.txns[txn][1]]
                assert present in ([0] * EVENTS_PER_TXN, [1] * EVENTS_PER_TXN), (
                    "%s: unacknowledged %s is partly recorded: %r" % (what, txn, present))
                stats["committed_unacked" if present[0] else "lost_unacked"] += 1
            stats["unacked"] += len(unacked)

            # Synapse resends what was not acknowledged, same txnId and body.
            for txn in unacked:
                status, resp = daemon.put_txn(txn, ledger.txns[txn][0])
                assert status == 200, "%s: resending %s answered %d %r" % (what, txn, status, resp)
                ledger.ack(txn)
            # A replay of an acknowledged transaction, and its events again under a new id.
            if ledger.acked:
                old = rng.choice(sorted(ledger.acked))
                body = ledger.txns[old][0]
                assert daemon.put_txn(old, body)[0] == 200
                assert daemon.put_txn("crash-replay-%d" % cycle, body)[0] == 200

            # The resent ones are checked with the rest at the next restart, and at the end.
            stats["cycles"] += 1

        # A clean stop signs everything.
        rc = daemon.stop()
        assert rc == 0, "threshold serve exited %s on SIGTERM" % rc
        out, _ = check_verify(daemon, "after the clean stop")
        m = re.search(r"records 1\.\.(\d+), (\d+) checkpoint signature\(s\) valid, the newest at seq (\d+)",
                      out)
        assert m and m.group(1) == m.group(3), "the clean stop did not sign the head: %r" % out
        recs = daemon.audit_records()
        last_daemon = [r for r in recs if r["kind"] != "audit_viewed"][-2:]
        assert [r["kind"] for r in last_daemon] == ["shutdown", "checkpoint"], last_daemon
        counts = collections.Counter(r["details"].get("event_id") for r in recs
                                     if r["kind"] == "contact_blocked")
        check_exactly_once(ledger, counts, list(ledger.txns), "at the end")
        assert sum(counts.values()) == len(ledger.events(list(ledger.txns))), (
            sum(counts.values()), len(ledger.events(list(ledger.txns))))
        starts = sum(1 for r in recs if r["kind"] == "startup")
        assert starts == CYCLES + 1, starts
    finally:
        daemon.kill()

    elapsed = time.monotonic() - t_start
    print("\n%d cycles in %.1f s (%s): %d transactions sent, %d records; %d unacknowledged "
          "at a kill (%d of them had committed, %d had not); %d checkpoints"
          % (CYCLES, elapsed, where, len(ledger.txns), len(recs), stats["unacked"],
             stats["committed_unacked"], stats["lost_unacked"], int(m.group(2))))
