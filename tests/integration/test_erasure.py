"""Erasure end to end against a real Synapse (docs/privacy.md, "Erasure").

A guest writes a unique word and sends a picture, then has their data
deleted: while the conversation is open, after staff closed it, and after
the guest ended it.  In each case, by the time the page is told "deleted":
  - staff can no longer read the word or fetch the picture;
  - Synapse's own database (event_json, event_search) holds the word no more
    and its media store holds the picture's bytes no more (read directly);
  - Threshold's data.mdb holds the word nowhere in the file (raw bytes: a
    freed page counts too);
  - the audit chain still verifies, and holds no pseudonym in clear.
Without an admin token the page says plainly that not everything could be
deleted, the safeguarding room is told, and staff see the words redacted all
the same, even though the guest had left the room.
"""

import json
import os
import secrets
import sqlite3
import struct
import subprocess
import time
import zlib

import pytest
import requests

from conftest import BIN
from gateway import API, Guest, api, join_portal, wait_gateway
from helpers import (alerts, audit_records, bearer, bot_reply, q, safeguarding, staff_room_with_bot,  # noqa: F401
                     staff_says)
from mx import Client, run

SERVICE = "erasure"
DISPLAY = "Erasure Test Service"


def random_png(side=8):
    """A small grey PNG whose pixels are random: its bytes are its own."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + secrets.token_bytes(side) for _ in range(side))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_token_file(path, token):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)


@pytest.fixture(scope="module")
def service(env, safeguarding):  # noqa: F811
    """A service, a safeguarding room, and a homeserver admin's token in a
    0600 file named by homeserver.admin_token_file (the admin is not the bot)."""
    staff_room = staff_room_with_bot(env, "Erasure staff")
    env.services = {SERVICE: {"display_name": DISPLAY, "staff_room": staff_room,
                              "public_entry": True, "public_per_hour": 1000}}
    env.admin_token_file = os.path.join(env.workdir, "homeserver-admin.token")
    write_token_file(env.admin_token_file, env.token("admin"))
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"staff_room": staff_room, "safeguarding": safeguarding}
    env.services = None
    env.admin_token_file = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def restart_with(env, admin_token_file):
    env.admin_token_file = admin_token_file
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)


def synapse_db(env):
    return os.path.join(env.hs.host_dir, "homeserver.db")


def synapse_rows_with(env, word):
    """Rows of Synapse's event_json and event_search that hold @word."""
    con = sqlite3.connect("file:%s?mode=ro" % synapse_db(env), uri=True, timeout=30)
    try:
        like = "%" + word + "%"
        n_json = con.execute("SELECT count(*) FROM event_json WHERE json LIKE ?", (like,)).fetchone()[0]
        n_search = con.execute("SELECT count(*) FROM event_search WHERE value LIKE ?",
                               (like,)).fetchone()[0]
        return n_json, n_search
    finally:
        con.close()


def media_files_holding(env, data):
    """Files of Synapse's media store whose bytes are @data (or contain them)."""
    found = []
    for root, _dirs, files in os.walk(os.path.join(env.hs.host_dir, "media_store")):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    if data in f.read():
                        found.append(path)
            except OSError:
                pass
    return found


def mdb_holds(env, needle):
    with open(os.path.join(env.store_path, "data.mdb"), "rb") as f:
        return needle in f.read()


def history(env, room, who="staff"):
    """The room's timeline as @who reads it, or None if they no longer can."""
    async def read():
        async with Client.for_user(env, who) as c:
            return await c.history(room)
    try:
        return run(read())
    except Exception as e:  # the room deleted: staff were removed from it
        if "403" in str(e) or "404" in str(e):
            return None
        raise


def staff_download(env, mxc):
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    r = requests.get("%s/_matrix/client/v1/media/download/%s/%s" % (env.hs_url, server, media_id),
                     headers=bearer(env.token("staff")), timeout=30)
    return r


def upload(env, g, data, local_id):
    return api.post(env.gw_url + API + "/upload", params={"local_id": local_id, "name": "p.png"},
                    data=data, headers={"Authorization": "Bearer " + g.session,
                                        "Content-Type": "application/octet-stream"}, timeout=30)


def guest_writes(env, service):
    """A guest who wrote a unique word and sent a picture, seen by staff.
    Returns (guest, portal room, word, the picture's bytes as stored, its mxc)."""
    g = Guest(env.gw_url)
    g.redeem(service=SERVICE)
    portal = join_portal(env, service["staff_room"], g.pseudonym, expect_service=DISPLAY)
    word = "zanzibar%s" % secrets.token_hex(6)
    lid = g.send("please keep this between us: %s" % word)
    g.wait_for(lambda e: e.get("local_id") == lid, what="the guest's message echo")
    r = upload(env, g, random_png(), "pic1")
    assert r.status_code == 202, r.text
    g.wait_for(lambda e: e.get("local_id") == "pic1", what="the picture's echo")
    timeline = history(env, portal)
    assert word in json.dumps(timeline)
    image = [ev for ev in timeline if ev.get("content", {}).get("msgtype") == "m.image"]
    assert len(image) == 1, image
    mxc = image[0]["content"]["url"]
    r = staff_download(env, mxc)
    assert r.status_code == 200, r.text
    stored = r.content
    # What is there to erase, before: the homeserver holds the word and the bytes.
    assert synapse_rows_with(env, word)[0] > 0
    assert media_files_holding(env, stored), "the picture is not in Synapse's media store"
    return g, portal, word, stored, mxc


def wait_erasure(env, receipt, timeout=120):
    """Poll GET erasure/{receipt} as the page does; its first answer that is
    not "erasing", and how many "erasing" answers came before it."""
    erasing = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(env.gw_url + API + "/erasure/" + receipt, timeout=30)
        assert r.status_code == 200, r.text
        state = r.json()["state"]
        if state != "erasing":
            return state, erasing
        erasing += 1
        time.sleep(0.2)
    raise AssertionError("the erasure %s was still running after %ss" % (receipt, timeout))


def guest_id_of(threshold, pseudonym):
    out = json.loads(threshold.run("guest", "show", pseudonym, "--json").stdout)
    return out["user_id"]


def end_state(env, threshold, service, g, portal, state):
    if state == "staff_closed":
        staff_says(env, portal, "!threshold close")
        g.wait_for(lambda e: e["kind"] == "closed", what="the closed entry")
    elif state == "guest_ended":
        assert g.post("/leave", {}).status_code == 200
        # the session is good for erasure only from now on
        assert g.get("/feed", params={"timeout_ms": 0}).status_code == 401
        assert g.post("/send", {"local_id": "late", "body": "more"}).status_code == 401
        r = g.get("/session")
        assert r.status_code == 200 and r.json()["erase_only"] is True, r.text


@pytest.mark.parametrize("state", ["open", "staff_closed", "guest_ended"])
def test_erasure_really_erases(env, threshold, service, state):
    g, portal, word, stored, mxc = guest_writes(env, service)
    guest = guest_id_of(threshold, g.pseudonym)
    pseudonym = g.pseudonym
    end_state(env, threshold, service, g, portal, state)

    r = g.post("/erase", {"confirm": True})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "erasing"
    receipt = r.json()["receipt"]
    final, erasing = wait_erasure(env, receipt)
    # The page was told "deleted" only now: everything below is already true.
    told = [a["content"].get("body", "") for a in alerts(env, service["safeguarding"])]
    assert final == "deleted", (final, told[-3:])
    assert erasing >= 1, "the page was told deleted before any step could have run"
    assert synapse_rows_with(env, word) == (0, 0), "Synapse's database still holds the words"
    assert media_files_holding(env, stored) == [], "Synapse's media store still holds the picture"
    assert not mdb_holds(env, word.encode()), "data.mdb holds the words"
    assert not mdb_holds(env, stored), "data.mdb holds the picture's bytes"
    # Staff: the room and the picture are gone for them.
    timeline = history(env, portal)
    assert timeline is None or word not in json.dumps(timeline), timeline
    assert staff_download(env, mxc).status_code == 404
    # The account is deactivated and erased.
    r = requests.get("%s/_synapse/admin/v2/users/%s" % (env.hs_url, q(guest)),
                     headers=bearer(env.token("admin")), timeout=30)
    assert r.status_code == 200 and r.json()["deactivated"] is True, r.text
    # On the record: ids only, every step done, the chain intact.
    done = audit_records(threshold, "erasure_done", subject=guest)
    assert len(done) == 1 and done[0]["reason"] == "erasure_done", done
    assert not audit_records(threshold, "erasure_step_failed", subject=guest)
    assert threshold.run("audit", "verify").returncode == 0
    everything = threshold.run("audit", "list", "--format", "jsonl").stdout
    assert guest in everything
    assert pseudonym not in everything, "a pseudonym in clear in the audit log"
    assert word not in everything
    # The session and the receipt: the session is gone, the receipt stays.
    assert g.get("/session").status_code == 401
    assert api.get(env.gw_url + API + "/erasure/" + receipt, timeout=30).json()["state"] == "deleted"


def test_erasure_without_admin_token_is_honest(env, threshold, service):
    """No admin token: after staff closed the conversation (the guest is no
    longer in the room) the bot still redacts the guest's words for staff;
    the page says not everything could be deleted; the safeguarding room
    and the audit log say what is left."""
    restart_with(env, None)
    try:
        g, portal, word, stored, _mxc = guest_writes(env, service)
        guest = guest_id_of(threshold, g.pseudonym)
        end_state(env, threshold, service, g, portal, "staff_closed")
        r = g.post("/erase", {"confirm": True})
        assert r.status_code == 202, r.text
        final, _ = wait_erasure(env, r.json()["receipt"])
        assert final == "incomplete"
        # Staff's client: the words and the picture are redacted, the room stays.
        timeline = history(env, portal)
        assert timeline is not None
        assert word not in json.dumps(timeline), "staff still read the guest's words"
        mine = [ev for ev in timeline if ev.get("sender") == guest and ev.get("type") == "m.room.message"]
        assert len(mine) == 2 and all(ev.get("content") == {} for ev in mine), mine
        assert all(ev["unsigned"]["redacted_because"]["sender"] == env.bot for ev in mine), mine
        # What is left is said, not hidden.
        done = audit_records(threshold, "erasure_done", subject=guest)
        assert len(done) == 1 and done[0]["reason"] == "erasure_incomplete", done
        assert set(done[0]["details"]["skipped"]) == {"media", "purge_room"}, done
        told = [a["content"].get("body", "") for a in alerts(env, service["safeguarding"])]
        assert any(guest in b and "admin_token_file" in b for b in told), told[-3:]
        assert not mdb_holds(env, word.encode()), "data.mdb holds the words"
        assert not mdb_holds(env, stored), "data.mdb holds the picture's bytes"
        assert "homeserver.admin_token_file is not set" in threshold.log_since_start()
    finally:
        restart_with(env, os.path.join(env.workdir, "homeserver-admin.token"))


def test_admin_token_file_must_be_private(env, threshold, service, tmp_path):
    """A token file others can read is refused at start, naming the key;
    doctor says the erasure steps can run with the right one."""
    loose = str(tmp_path / "loose.token")
    write_token_file(loose, env.token("admin"))
    os.chmod(loose, 0o644)
    cfg_path = str(tmp_path / "threshold.yaml")
    with open(env.config_path) as f:
        text = f.read()
    with open(cfg_path, "w") as f:
        f.write(text.replace(env.admin_token_file, loose))
    r = subprocess.run([BIN, "-c", cfg_path, "check-config"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "homeserver.admin_token_file" in r.stderr and "chmod 600" in r.stderr, r.stderr
    out = json.loads(threshold.run("doctor", "--json", check=False).stdout)
    rows = [f for f in out["findings"] if f["check"] == "erasure_admin"]
    assert rows and rows[0]["status"] == "ok", rows


def test_erasure_redacts_reveals_in_the_safeguarding_room(env, threshold, service):
    """A lead's "!audit reveal" about the guest, answered by the bot in the
    safeguarding room, is redacted there by the erasure."""
    room = service["safeguarding"]
    g = Guest(env.gw_url)
    g.redeem(service=SERVICE)
    guest = guest_id_of(threshold, g.pseudonym)

    async def ask():
        async with Client.for_user(env, "lead") as lead:
            return await lead.send_text(room, "!audit reveal %s checking before deletion" % g.pseudonym)
    asked = run(ask())
    reply = bot_reply(env, "lead", room, asked)
    assert reply["content"]["body"].startswith("RECORDED: ") and "(%s)" % guest in reply["content"]["body"]
    r = g.post("/erase", {"confirm": True})
    assert r.status_code == 202, r.text
    final, _ = wait_erasure(env, r.json()["receipt"])
    assert final == "deleted"

    async def read():
        async with Client.for_user(env, "lead") as lead:
            return await lead.history(room)
    shown = [ev for ev in run(read()) if ev.get("event_id") == reply["event_id"]]
    assert len(shown) == 1 and shown[0].get("content") == {}, shown
    assert shown[0]["unsigned"]["redacted_because"]["sender"] == env.bot, shown


def test_failed_step_is_recorded_alerted_and_never_called_deleted(env, threshold, service):
    """The admin token is a non-admin's (staff's): the homeserver refuses the
    media and room steps.  Each refusal is an erasure_step_failed record and
    an alert in the safeguarding room; the page ends "incomplete", never
    "deleted"; the bot's redactions were done all the same."""
    wrong = os.path.join(env.workdir, "not-an-admin.token")
    write_token_file(wrong, env.token("staff"))
    restart_with(env, wrong)
    try:
        g, portal, word, _stored, _mxc = guest_writes(env, service)
        guest = guest_id_of(threshold, g.pseudonym)
        r = g.post("/erase", {"confirm": True})
        assert r.status_code == 202, r.text
        final, _ = wait_erasure(env, r.json()["receipt"])
        assert final == "incomplete"
        failed = audit_records(threshold, "erasure_step_failed", subject=guest)
        steps = sorted(rec["details"]["step"] for rec in failed)
        assert steps == ["media", "purge_room"], failed
        assert all("403" in rec["details"]["refused"] for rec in failed), failed
        done = audit_records(threshold, "erasure_done", subject=guest)
        assert len(done) == 1 and done[0]["reason"] == "erasure_incomplete", done
        told = [a["content"].get("body", "") for a in alerts(env, service["safeguarding"])]
        assert any("could NOT delete their files" in b and guest in b for b in told), told[-4:]
        assert any("could NOT delete and purge their conversation room" in b for b in told), told[-4:]
        timeline = history(env, portal)
        assert timeline is not None and word not in json.dumps(timeline)
        assert threshold.run("audit", "verify").returncode == 0
    finally:
        restart_with(env, os.path.join(env.workdir, "homeserver-admin.token"))


def test_erasure_resumes_after_a_crash(env, threshold, service):
    """Threshold is killed (SIGKILL) the moment the erasure is accepted: the
    job is in the store, and after the restart it carries on to the end."""
    g, portal, word, stored, _mxc = guest_writes(env, service)
    r = g.post("/erase", {"confirm": True})
    assert r.status_code == 202, r.text
    env.threshold.kill()
    # Down: the receipt cannot be asked about, and nothing says "deleted".
    env.threshold.start()
    wait_gateway(env)
    final, _ = wait_erasure(env, r.json()["receipt"])
    assert final == "deleted"
    assert synapse_rows_with(env, word) == (0, 0)
    assert media_files_holding(env, stored) == []
    assert not mdb_holds(env, word.encode())
    timeline = history(env, portal)
    assert timeline is None or word not in json.dumps(timeline)
    assert threshold.run("audit", "verify").returncode == 0
