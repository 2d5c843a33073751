"""A safeguarding lead's records work against a real Synapse: a subject access
export of one guest (what their page showed, their consent, and a record
that the export was made), and retention with holds (a lead's hold keeps a
conversation past its retention; releasing it lets it go, from Threshold's
store and, through the admin API, from the homeserver).

Two services: "helpline" keeps conversations for conversation_expiry_days
(30 days), "shortline" for 15 seconds, so retention can be watched here.
"""

import json
import os
import stat
import time

import pytest
import requests
import yaml

from gateway import API, Guest, join_portal, wait_gateway
from helpers import audit_records, bearer, q, staff_room_with_bot, wait
from mx import Client, run

RETENTION_S = 15
JOB_S = 10  # RETENTION_INTERVAL_MS


def write_config_with(env, extra_homeserver):
    env.write_config()
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["homeserver"].update(extra_homeserver)
    with open(env.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


@pytest.fixture(scope="module")
def services(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    help_room = staff_room_with_bot(env, "Records helpline staff")
    short_room = staff_room_with_bot(env, "Records shortline staff")
    env.services = {
        "helpline": {"display_name": "Records Helpline", "staff_room": help_room,
                     "greeting": "Hello, you are through to the records helpline.",
                     "notice_version": "4", "notice": {"en": "Kept 30 days."},
                     "public_entry": True, "public_per_hour": 1000},
        "shortline": {"display_name": "Short Line", "staff_room": short_room,
                      "greeting": "Hello from the short line.", "notice": {"en": "Kept briefly."},
                      "public_entry": True, "public_per_hour": 1000,
                      "retention": "%ds" % RETENTION_S},
    }
    # The homeserver admin's token, in its own file, for purging rooms.
    token_file = os.path.join(env.workdir, "hs-admin.token")
    with open(token_file, "w") as f:
        f.write(env.token("admin") + "\n")
    os.chmod(token_file, 0o600)
    write_config_with(env, {"admin_token_file": token_file})
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"helpline": help_room, "shortline": short_room}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def staff_reply(env, room, text):
    async def send():
        async with Client.for_user(env, "staff") as s:
            return await s.send_text(room, text)
    return run(send())


def history(env, room):
    async def read():
        async with Client.for_user(env, "staff") as c:
            return await c.history(room)
    return run(read())


def guest_id_of(threshold, pseudonym):
    return json.loads(threshold.run("guest", "show", pseudonym, "--json").stdout)["user_id"]


def test_subject_access_export_holds_what_the_page_showed(env, services):
    threshold = env.threshold
    guest = Guest(env.gw_url)
    guest.redeem(service="helpline", version="4")
    guest.wait_for(lambda e: e["kind"] == "notice", what="the greeting")
    portal = join_portal(env, services["helpline"], guest.pseudonym)
    local_id = guest.send("Hello, I need some help with my housing")
    guest.wait_for(lambda e: e.get("local_id") == local_id, what="the guest's own message")
    # Staff answer what they have read, so the reply follows it in the room.
    wait(lambda: any(ev.get("content", {}).get("body") == "Hello, I need some help with my housing"
                     for ev in history(env, portal)), 30, "the guest's message in the room", step=0.5)
    staff_reply(env, portal, "Hi, I'm here. How can I help?")
    guest.wait_for(lambda e: e.get("body") == "Hi, I'm here. How can I help?", what="the reply")
    gid = guest_id_of(threshold, guest.pseudonym)

    out = os.path.join(env.workdir, "sar.txt")
    r = threshold.run("guest", "export", guest.pseudonym, "--out", out)
    assert "recorded as subject_access_exported" in r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    text = open(out, encoding="utf-8").read()
    # What the page showed, in order, by the names the page gave.
    mine = text.index("%s (the guest): Hello, I need some help with my housing" % guest.pseudonym)
    reply = text.index("(staff): Hi, I'm here. How can I help?")
    assert mine < reply, text
    assert "Hello, you are through to the records helpline." in text
    # Their consent, and the lead's duty to review.
    consent = text[text.index("3. CONSENTS"):text.index("4. AUDIT LOG")]
    assert "consent_recorded" in consent and '"notice_version":"4"' in consent, consent
    assert "REVIEW BEFORE DISCLOSURE" in text and "Person        %s" % gid in text
    assert "Records Helpline" in text
    # No session or resume secret is exported.
    assert guest.session not in text and (guest.resume_code or "-") not in text
    # The export is on the record: who, whom, counts only.
    recs = audit_records(threshold, "subject_access_exported", subject=gid)
    assert len(recs) == 1, recs
    assert recs[0]["actor"].startswith("cli:") and recs[0]["details"]["feed_entries"] >= 3, recs
    assert recs[0]["details"]["consents"] == 1
    assert guest.pseudonym not in json.dumps(recs[0])


def admin_room(env, room):
    return requests.get("%s/_synapse/admin/v1/rooms/%s" % (env.hs_url, q(room)),
                        headers=bearer(env.token("admin")), timeout=30)


def report(threshold):
    return json.loads(threshold.run("retention", "report", "--json").stdout)


def row(rep, gid):
    return next((c for c in rep["conversations"] if c["guest"] == gid), None)


def test_a_hold_keeps_a_conversation_past_retention_and_release_lets_it_go(env, services):
    threshold = env.threshold
    held, free = Guest(env.gw_url), Guest(env.gw_url)
    held.redeem(service="shortline")
    t0 = time.time()
    free.redeem(service="shortline")
    held_room = join_portal(env, services["shortline"], held.pseudonym)
    held.send("Please keep this")
    free.send("Nothing to keep")
    hid, fid = guest_id_of(threshold, held.pseudonym), guest_id_of(threshold, free.pseudonym)

    r = threshold.run("hold", "add", held.pseudonym, "--reason", "police enquiry ref 12")
    assert "held" in r.stdout
    r = threshold.run("hold", "add", held.pseudonym, "--reason", "twice over", check=False)
    assert r.returncode == 1 and "already held" in r.stderr
    assert "police enquiry ref 12" in threshold.run("hold", "list").stdout
    rep = report(threshold)
    assert rep["homeserver_purge"] is True
    assert row(rep, hid)["status"] == "kept" and "police enquiry ref 12" in row(rep, hid)["why"], rep
    assert row(rep, fid)["status"] in ("goes", "due") and "retention" in row(rep, fid)["why"], rep
    text = threshold.run("retention", "report").stdout
    assert "kept: held by cli:" in text and "rooms are NOT deleted" not in text, text

    # The free conversation goes at its retention; the held one stays.
    wait(lambda: audit_records(threshold, "retention_removed", subject=fid),
         RETENTION_S + 3 * JOB_S, "the unheld conversation removed", step=1)
    time.sleep(max(0, t0 + RETENTION_S + 2 * JOB_S - time.time()))
    assert not audit_records(threshold, "retention_removed", subject=hid)
    assert row(report(threshold), hid)["status"] == "kept"
    assert row(report(threshold), fid) is None
    assert free.get("/feed", params={"since": 0, "timeout_ms": 0}).status_code != 200
    assert held.get("/feed", params={"since": 0, "timeout_ms": 0}).status_code == 200
    assert admin_room(env, held_room).status_code == 200

    # Placing and lifting are on the record; the reason only sealed.
    placed = audit_records(threshold, "hold_placed", subject=hid)
    assert len(placed) == 1 and placed[0]["sealed"] and placed[0]["room"] == held_room, placed
    assert "police" not in json.dumps(placed[0])

    threshold.run("hold", "remove", held.pseudonym, "--reason", "enquiry closed")
    assert len(audit_records(threshold, "hold_released", subject=hid)) == 1
    gone = wait(lambda: audit_records(threshold, "retention_removed", subject=hid),
                3 * JOB_S, "the released conversation removed", step=1)
    assert gone[0]["room"] == held_room
    assert held.get("/feed", params={"since": 0, "timeout_ms": 0}).status_code != 200
    assert row(report(threshold), hid) is None
    # ...and its room deleted and purged on the homeserver.
    wait(lambda: admin_room(env, held_room).status_code == 404, 60,
         "the room purged on the homeserver", step=1)
    assert "no holds" in threshold.run("hold", "list").stdout
