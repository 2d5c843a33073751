"""A witness outside the store (real Synapse): each signed audit checkpoint's
seq and hash are posted by the bot to the witness room (here the
safeguarding room), and `threshold audit verify` checks the store against
them by default.

Someone with file access rolls the store back to an earlier copy of
data.mdb (as a backup restore or an attacker would): the chain and every
signature in it still hold, so only the witness shows that later records
existed.  verify must say so, with no export at hand; the untouched store
verifies; --no-witness skips the check and says what that costs, and an
unreachable homeserver is an error that names the option.
"""

import json
import os
import shutil

import requests
import yaml

from helpers import bearer, q, safeguarding, wait  # noqa: F401 (safeguarding: a fixture)

WITNESS_TYPE = "org.threshold.audit.checkpoint"


def witnessed(env, room):
    """[(seq, hash)] of the bot's witness events, as a lead reads them."""
    flt = json.dumps({"types": [WITNESS_TYPE]})
    r = requests.get("%s/_matrix/client/v3/rooms/%s/messages?dir=b&limit=1000&filter=%s"
                     % (env.hs_url, q(room), q(flt)), headers=bearer(env.token("lead")), timeout=30)
    r.raise_for_status()
    return [(ev["content"]["seq"], ev["content"]["hash"]) for ev in r.json()["chunk"]
            if ev["sender"] == env.bot and "seq" in ev.get("content", {})]


def checkpoints(threshold):
    out = threshold.run("audit", "list", "--kind", "checkpoint", "--format", "jsonl").stdout
    return [json.loads(line)["seq"] for line in out.splitlines() if line.strip()]


def make_checkpoints(env, threshold, room, n):
    """n exports, each signing a fresh checkpoint, each waited for in the
    witness room (the first witness of a store starts at its newest)."""
    for i in range(n):
        threshold.run("audit", "export", "-o", os.path.join(env.workdir, "witness-%d.jsonl" % i))
        newest = max(checkpoints(threshold))
        wait(lambda: any(s == newest for s, _ in witnessed(env, room)), 30,
             "checkpoint %d posted to the witness room" % newest, step=0.3)
    return newest


def data_mdb(env):
    return os.path.join(env.store_path, "data.mdb")


def test_rollback_to_an_earlier_checkpoint_is_reported_without_an_export(env, safeguarding):
    room = safeguarding
    threshold = env.threshold
    first = make_checkpoints(env, threshold, room, 3)
    seen = witnessed(env, room)
    assert len(seen) >= 3, seen
    # Nothing but a seq and a hash is posted.
    for s, h in seen:
        assert isinstance(s, int) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)

    # A copy of the store as it was then (taken with Threshold stopped,
    # as a backup would be).
    threshold.stop()
    early = os.path.join(env.workdir, "data.mdb.early")
    shutil.copyfile(data_mdb(env), early)
    threshold.start()
    later = make_checkpoints(env, threshold, room, 3)
    assert later > first

    ok = threshold.run("audit", "verify", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "witnessed checkpoint(s) match the store" in ok.stdout, ok.stdout

    # The rollback: Threshold stopped, data.mdb replaced by the earlier copy.
    threshold.stop()
    late = os.path.join(env.workdir, "data.mdb.late")
    shutil.copyfile(data_mdb(env), late)
    shutil.copyfile(early, data_mdb(env))
    try:
        # On its own the rolled-back chain still holds...
        alone = threshold.run("audit", "verify", "--no-witness", check=False)
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert "audit chain ok" in alone.stdout
        assert "witness room NOT checked" in alone.stdout, alone.stdout
        # ...but the witness room shows the log once reached further.
        bad = threshold.run("audit", "verify", check=False)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "ROLLED BACK" in bad.stdout, bad.stdout
        assert "seq %d" % later in bad.stdout or "witness room saw" in bad.stdout, bad.stdout

        # A homeserver that cannot be reached is an error naming the way round it.
        with open(env.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["homeserver"]["url"] = "http://127.0.0.1:9"
        down_cfg = os.path.join(env.workdir, "threshold-hs-down.yaml")
        with open(down_cfg, "w") as f:
            yaml.safe_dump(cfg, f)
        r = threshold.run("-c", down_cfg, "audit", "verify", check=False)
        # Threshold.run puts its own -c first; the later one wins.
        assert r.returncode == 3, r.stdout + r.stderr
        assert "unreachable" in r.stderr and "--no-witness" in r.stderr, r.stderr
    finally:
        shutil.copyfile(late, data_mdb(env))
    back = threshold.run("audit", "verify", check=False)
    assert back.returncode == 0, back.stdout + back.stderr
    threshold.start()
