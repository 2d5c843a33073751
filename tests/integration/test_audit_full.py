"""A full store refuses a transaction whole, keeps the audit log intact, and
takes the resent transaction once the map is raised.

The store's map (store.map_size_mb, 16 MiB here) fills with invites of the bot
from another server (one contact_blocked record each).  The transaction that
does not fit is answered 503 M_LIMIT_EXCEEDED and leaves nothing behind; the
log still verifies; the daemon still stops cleanly and signs its head.  With
a larger map it starts again and the homeserver's resend is recorded exactly
once.  No Synapse (tests/integration/standalone.py).
"""

import collections
import os
import shutil
import tempfile

import pytest
import yaml

from standalone import REMOTE_SERVER, Standalone, member_event

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))
PER_TXN = 20


def txn(d, n):
    return {"events": [
        member_event("$full-%d-%d" % (n, i), "!full-%d-%d:%s" % (n, i, REMOTE_SERVER),
                     "@stranger:" + REMOTE_SERVER, d.bot, "invite") for i in range(PER_TXN)]}


def event_counts(d):
    return collections.Counter(r["details"]["event_id"]
                               for r in d.audit_records(kind="contact_blocked"))


@pytest.fixture
def workdir():
    w = tempfile.mkdtemp(prefix="threshold-full-")
    yield w
    shutil.rmtree(w, ignore_errors=True)


def test_full_store_refuses_whole_transactions_and_keeps_the_log(workdir):
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    d = Standalone(BIN, workdir, map_size_mb=16, log_level="warn").setup()
    d.start()
    try:
        conn = d.connection()
        n = 0
        while True:
            status, body = d.put_txn("full-%d" % n, txn(d, n), conn=conn)
            if status != 200:
                break
            n += 1
            assert n < 100000, "the store never filled"
        conn.close()
        assert status == 503 and b"M_LIMIT_EXCEEDED" in body, (status, body)
        refused = n
        assert "the store is full" in d.log_text()

        r = d.verify()
        assert r.returncode == 0, r.stdout + r.stderr
        counts = event_counts(d)
        assert all(counts["$full-%d-%d" % (i, j)] == 1 for i in range(refused) for j in range(PER_TXN))
        assert not any(counts["$full-%d-%d" % (refused, j)] for j in range(PER_TXN)), \
            "the refused transaction left records behind"
        assert d.ping()[0] == 200, "the daemon stopped serving"
        assert d.stop() == 0
    finally:
        d.kill()
    out = d.verify().stdout
    assert "not signed yet" not in out, out

    # Raise the map, restart: the homeserver's resend goes in, once.
    with open(d.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["store"]["map_size_mb"] = 64
    with open(d.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    d.start()
    try:
        assert d.put_txn("full-%d" % refused, txn(d, refused))[0] == 200
        assert d.put_txn("full-%d" % (refused - 1), txn(d, refused - 1))[0] == 200  # a replay
        counts = event_counts(d)
        assert set(counts.values()) == {1}, [e for e, c in counts.items() if c != 1][:10]
        assert sum(counts.values()) == (refused + 1) * PER_TXN
        assert d.stop() == 0
    finally:
        d.kill()
    r = d.verify()
    assert r.returncode == 0, r.stdout + r.stderr
