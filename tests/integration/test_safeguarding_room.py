"""Safeguarding leads ask the bot about the audit log (real Synapse).

In the safeguarding room a lead's `!audit recent` and `!audit guest <who>`
are answered from the log, and each answer is itself an audit_viewed record.
Anyone else, or a lead anywhere else, gets nothing at all: no reply, no
record.  The tests run in order: the audit_viewed check comes after the
lead's questions asked by the ones before it.

Then the two commands that do more than read: `!audit export` posts the
signed log as a file (checked here with `threshold audit verify --file`), and
`!audit reveal <who> <reason>` opens a guest's sealed note, each on the
record (audit_exported, identity_revealed) and each for leads only.
"""

import json
import uuid

import requests

from helpers import (audit_records, bearer, ensure_user,  # noqa: F401 (safeguarding: a fixture)
                     membership, safeguarding, stranger_invites_guest)
from mx import Client, MatrixError, poll, replies_to, run

QUIET_SECONDS = 5  # how long "no reply" is waited for

# (query, subject) of each question the lead asked in the safeguarding room.
ASKED = []

# This module's own logins.  Synapse keeps a user's first /sync answer for a
# while per device, so a test that reads history through a brand-new client
# can see the room as it was when another test synced; a device of our own
# keeps that from reaching the other modules' tests (and theirs from ours).
_DEVICES = {}


def client(env, name):
    if name not in _DEVICES:
        user_id, password = env.users[name][0], env.users[name][1]
        r = requests.post(env.hs_url + "/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
            "password": password, "initial_device_display_name": "safeguarding room tests"},
            timeout=30)
        r.raise_for_status()
        _DEVICES[name] = (user_id, r.json()["access_token"], r.json()["device_id"])
    user_id, token, device = _DEVICES[name]
    return Client(env.hs_url, user_id, token, device)


def ask(env, user, room, text, timeout=30):
    """Send text as user and wait for the bot's answer.  Returns the replies to
    it, and every reply in the room as that same (fresh) read saw them."""
    async def go():
        async with client(env, user) as c:
            cmd = await c.send_text(room, text)
            seen = {}

            async def reply():
                seen.update(replies_to(await c.history(room), env.bot))
                return seen.get(cmd)

            got = await poll(reply, timeout=timeout, what="the bot's answer to %r" % text)
            return got, seen
    return run(go())


def ask_expecting_silence(env, user, room, text):
    """Send text as user; return its event id after QUIET_SECONDS without a reply."""
    async def go():
        async with client(env, user) as c:
            cmd = await c.send_text(room, text)

            async def reply():
                return replies_to(await c.history(room), env.bot).get(cmd)

            try:
                got = await poll(reply, timeout=QUIET_SECONDS, what="silence")
            except MatrixError:
                return cmd
            raise AssertionError("the bot answered %s's %r: %r" % (user, text, got))
    return run(go())


def blocked_invite(env, threshold):
    """A stranger invites a fresh guest: refused and recorded.  Returns (guest, record)."""
    guest, _, rec = stranger_invites_guest(env, threshold)
    return guest, rec


def test_lead_asks_for_recent_records(env, safeguarding, threshold):
    guest, blocked = blocked_invite(env, threshold)
    replies, _ = ask(env, "lead", safeguarding, "!audit recent")
    ASKED.append(("recent", None))
    assert len(replies) == 1, replies
    content = replies[0]["content"]
    assert content["msgtype"] == "m.notice"
    body = content["body"]
    lines = body.splitlines()
    assert lines[0].startswith("The last ") and lines[0].endswith("audit records, oldest first:"), body
    line = [ln for ln in lines if ln.startswith("#%d " % blocked["seq"])]
    assert len(line) == 1, body
    assert ("contact_blocked actor=%s subject=%s reason=guest_contact_blocked"
            % (blocked["actor"], guest["user_id"])) in line[0], line
    # Ids only: not the room's name, not the guest's pseudonym.
    assert "hello there" not in body and guest["pseudonym"] not in body
    assert lines[-1].startswith("This question is audit record #"), body
    assert len(lines) <= 1 + 10 + 1


def test_lead_asks_about_a_guest(env, safeguarding, threshold):
    guest, blocked = blocked_invite(env, threshold)
    created = audit_records(threshold, "guest_created", subject=guest["user_id"])
    assert len(created) == 1, created

    replies, _ = ask(env, "lead", safeguarding, "!audit guest " + guest["pseudonym"])
    ASKED.append(("guest", guest["user_id"]))
    body = replies[0]["content"]["body"]
    lines = body.splitlines()
    assert lines[0] == ("Audit records about guest %s (%s), oldest first:"
                        % (guest["pseudonym"], guest["user_id"])), body
    assert lines[1].startswith("#%d " % created[0]["seq"]) and "guest_created" in lines[1], body
    assert lines[2].startswith("#%d " % blocked["seq"]) and "contact_blocked" in lines[2], body
    # Then the CLI's own views of this guest's records (audit list --subject above).
    assert all("audit_viewed actor=cli:" in ln for ln in lines[3:-1]), body
    assert lines[-1].startswith("This question is audit record #"), body

    # By user id too.
    replies, _ = ask(env, "lead", safeguarding, "!audit guest " + guest["user_id"])
    ASKED.append(("guest", guest["user_id"]))
    assert replies[0]["content"]["body"].splitlines()[1:3] == lines[1:3]

    replies, _ = ask(env, "lead", safeguarding, "!audit guest Nobody Atall")
    ASKED.append(("guest", None))
    assert replies[0]["content"]["body"].startswith("No guest called Nobody Atall."), replies


def test_staff_who_is_not_a_lead_gets_nothing(env, safeguarding, threshold):
    ensure_user(env, "staff")

    async def add_staff():
        async with client(env, "lead") as lead:
            await lead.invite(safeguarding, env.users["staff"][0])
        async with client(env, "staff") as s:
            await s.nio.join(safeguarding)

    run(add_staff())
    cmd = ask_expecting_silence(env, "staff", safeguarding, "!audit recent")
    # The bot sees a room's events in order and answers in order: once the
    # lead's later question is answered, the staff member's was certainly
    # seen, and the same read shows it unanswered.
    _, seen = ask(env, "lead", safeguarding, "!audit recent")
    ASKED.append(("recent", None))
    assert seen.get(cmd) is None, seen.get(cmd)
    assert audit_records(threshold, "audit_viewed", actor=env.users["staff"][0]) == []


def test_lead_outside_the_safeguarding_room_gets_nothing(env, safeguarding, threshold):
    async def make():
        async with client(env, "lead") as lead:
            room = await lead.create_room("elsewhere " + uuid.uuid4().hex[:6])
            await lead.invite(room, env.bot)
            await lead.wait_for_member(room, env.bot, "join", timeout=30)
            return room

    room = run(make())
    cmd = ask_expecting_silence(env, "lead", room, "!audit recent")
    # The bot is there and answers other commands: it saw the question and said nothing.
    _, seen = ask(env, "lead", room, "!threshold ping")
    assert seen.get(cmd) is None, seen.get(cmd)
    assert audit_records(threshold, "audit_viewed", room=room) == []


def test_only_the_leads_questions_are_recorded(env, safeguarding, threshold):
    lead = env.users["lead"][0]
    # Each question above was answered, so its record (same transaction) is committed.
    recs = audit_records(threshold, "audit_viewed")
    # `threshold audit list` records its own views too, as the CLI user.
    chat = [r for r in recs if not (r["actor"] or "").startswith("cli:")]
    assert [(r["details"].get("query"), r["subject"]) for r in chat] == ASKED, chat
    for r in chat:
        assert r["actor"] == lead and r["room"] == safeguarding, r
        assert r["reason"] == "audit_query_answered", r
    assert threshold.run("audit", "verify").returncode == 0


# ---- export and break glass ------------------------------------------------
# These come after the audit_viewed check above: a reveal without a reason is
# answered with its usage, which is an audit_viewed record like any usage.

NOTE = "Emergency contact: Aunt Jo, 07700 900123"
REASON = "not seen at the group for two weeks, worried"


def join_staff(env, room):
    """The staff member (not a lead) in the room, whatever ran before."""
    ensure_user(env, "staff")
    if membership(env, "lead", room, env.users["staff"][0])[0] == "join":
        return

    async def add():
        async with client(env, "lead") as lead:
            await lead.invite(room, env.users["staff"][0])
        async with client(env, "staff") as s:
            await s.nio.join(room)

    run(add())


def download(env, mxc):
    assert mxc.startswith("mxc://"), mxc
    server, media = mxc[len("mxc://"):].split("/", 1)
    headers = bearer(_DEVICES["lead"][1])
    # spec: authenticated media (v1.11); an older Synapse answers only on v3.
    r = requests.get("%s/_matrix/client/v1/media/download/%s/%s" % (env.hs_url, server, media),
                     headers=headers, timeout=30)
    if r.status_code in (404, 405):
        r = requests.get("%s/_matrix/media/v3/download/%s/%s" % (env.hs_url, server, media),
                         headers=headers, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    return r.content


def test_lead_exports_the_log(env, safeguarding, threshold, tmp_path):
    lead = env.users["lead"][0]
    replies, _ = ask(env, "lead", safeguarding, "!audit export --since 7d", timeout=60)
    assert len(replies) == 1, replies
    content = replies[0]["content"]
    assert content["msgtype"] == "m.file", content
    assert content["body"].startswith("threshold-audit-") and content["body"].endswith(".jsonl")
    assert content["info"]["mimetype"] == "application/x-ndjson", content

    data = download(env, content["url"])
    assert len(data) == content["info"]["size"]
    path = tmp_path / content["body"]
    path.write_bytes(data)
    r = threshold.run("audit", "verify", "--file", str(path), check=False)
    assert r.returncode == 0, (r.stdout, r.stderr)

    recs = audit_records(threshold, "audit_exported", actor=lead)
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["room"] == safeguarding and rec["reason"] == "audit_export_queued", rec
    assert rec["details"]["format"] == "jsonl" and rec["details"]["since_ms"] > 0, rec
    # The export holds the record that says it was taken.
    lines = [json.loads(ln) for ln in data.splitlines() if ln.strip()]
    assert lines[0]["format"] == "threshold-audit-export/v1", lines[0]
    assert any(ln.get("seq") == rec["seq"] and ln.get("kind") == "audit_exported" for ln in lines)


def test_staff_who_is_not_a_lead_gets_no_export(env, safeguarding, threshold):
    join_staff(env, safeguarding)
    cmd = ask_expecting_silence(env, "staff", safeguarding, "!audit export")
    _, seen = ask(env, "lead", safeguarding, "!audit recent")
    assert seen.get(cmd) is None, seen.get(cmd)
    assert audit_records(threshold, "audit_exported", actor=env.users["staff"][0]) == []


def test_lead_reveals_a_sealed_note(env, safeguarding, threshold):
    lead = env.users["lead"][0]
    guest = json.loads(threshold.run("guest", "create", "--json", "--sealed-note", NOTE).stdout)
    # Nothing but a reveal shows it.
    replies, _ = ask(env, "lead", safeguarding, "!audit guest " + guest["user_id"])
    assert NOTE not in replies[0]["content"]["body"]

    replies, _ = ask(env, "lead", safeguarding,
                     "!audit reveal %s %s" % (guest["pseudonym"], REASON))
    body = replies[0]["content"]["body"]
    lines = body.splitlines()
    assert lines[0].startswith("RECORDED: "), body
    assert NOTE in body and "guest_created" in body, body
    assert lines[-1].startswith("This question is audit record #"), body

    recs = audit_records(threshold, "identity_revealed", subject=guest["user_id"])
    assert len(recs) == 1, recs
    assert recs[0]["actor"] == lead and recs[0]["room"] == safeguarding, recs
    assert recs[0]["details"] == {"reason": REASON}, recs
    assert recs[0]["reason"] == "identity_revealed", recs
    assert "#%d." % recs[0]["seq"] in lines[-1], body
    # The note is sealed in the log, never in plain text.
    created = audit_records(threshold, "guest_created", subject=guest["user_id"])
    assert NOTE not in json.dumps(created)

    # No reason: the usage, and nothing revealed or recorded as a reveal.
    replies, _ = ask(env, "lead", safeguarding, "!audit reveal " + guest["pseudonym"])
    body = replies[0]["content"]["body"]
    assert body.startswith("Usage: !audit reveal"), body
    assert NOTE not in body
    replies, _ = ask(env, "lead", safeguarding, "!audit reveal %s too short" % guest["pseudonym"])
    assert replies[0]["content"]["body"].startswith("Usage: !audit reveal")
    assert len(audit_records(threshold, "identity_revealed", subject=guest["user_id"])) == 1

    # Someone who is not a lead: nothing at all.
    join_staff(env, safeguarding)
    cmd = ask_expecting_silence(env, "staff", safeguarding,
                                "!audit reveal %s %s" % (guest["pseudonym"], REASON))
    _, seen = ask(env, "lead", safeguarding, "!audit recent")
    assert seen.get(cmd) is None, seen.get(cmd)
    assert audit_records(threshold, "identity_revealed", actor=env.users["staff"][0]) == []
    assert threshold.run("audit", "verify").returncode == 0


def test_reveal_refused_while_the_room_is_not_private(env, safeguarding, threshold):
    """History made readable to anyone who joins later ("shared"): a lead's
    reveal is refused with a plain answer, on the record, and nothing is
    revealed; back to "joined", the reveal is answered."""
    guest = json.loads(threshold.run("guest", "create", "--json", "--sealed-note", NOTE).stdout)

    def history(visibility):
        async def go():
            async with client(env, "lead") as c:
                r = await c.nio.room_put_state(safeguarding, "m.room.history_visibility",
                                               {"history_visibility": visibility})
                assert getattr(r, "event_id", None), r
        run(go())
    history("shared")
    try:
        replies, _ = ask(env, "lead", safeguarding,
                         "!audit reveal %s %s" % (guest["pseudonym"], REASON))
        body = replies[0]["content"]["body"]
        assert NOTE not in body, body
        assert "Nothing was revealed" in body and "not known to be private" in body, body
        assert audit_records(threshold, "identity_revealed", subject=guest["user_id"]) == []
        refused = [r for r in audit_records(threshold, "audit_viewed")
                   if r["reason"] == "reveal_room_not_private"]
        assert refused and refused[-1]["actor"] == env.users["lead"][0], refused
        assert refused[-1]["room"] == safeguarding, refused
    finally:
        history("joined")
    replies, _ = ask(env, "lead", safeguarding,
                     "!audit reveal %s %s" % (guest["pseudonym"], REASON))
    assert NOTE in replies[0]["content"]["body"]
