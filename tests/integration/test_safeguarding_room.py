"""Safeguarding leads ask the bot about the audit log (real Synapse).

In the safeguarding room a lead's `!audit recent` and `!audit guest <who>`
are answered from the log, and each answer is itself an audit_viewed record.
Anyone else, or a lead anywhere else, gets nothing at all: no reply, no
record.  The tests run in order: the last one checks the audit_viewed records
of the lead's questions asked by the ones before it.
"""

import uuid

import requests

from helpers import (audit_records, create_guest, ensure_user,  # noqa: F401
                     safeguarding, wait_membership)
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
    guest = create_guest(env, threshold)
    ensure_user(env, "mallory")

    async def invite():
        async with Client.for_user(env, "mallory") as m:
            room = await m.create_room("hello there")
            await m.invite(room, guest["user_id"])
            return room

    room = run(invite())
    wait_membership(env, "mallory", room, guest["user_id"], "leave")
    recs = audit_records(threshold, "contact_blocked", subject=guest["user_id"])
    assert len(recs) == 1, recs
    return guest, recs[0]


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
