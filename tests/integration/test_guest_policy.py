"""Guests cannot be reached outside rooms the charity manages (real Synapse).

Each test makes a fresh guest with `threshold guest create`, lets a real user
try to reach it through the homeserver, and checks what that user would see
(the guest's membership, the reason given), the audit log, and the alert in
the safeguarding room.
"""

import json
import time

import requests

from helpers import (alerts, audit_records, bearer, create_guest, ensure_user, q,  # noqa: F401 (safeguarding: a fixture)
                     safeguarding, stranger_invites_guest, wait_membership)
from mx import Client, poll, replies_to, run


def test_stranger_invite_to_guest_is_rejected_audited_and_alerted(env, safeguarding, threshold):
    guest, room, rec = stranger_invites_guest(env, threshold)
    mallory = env.users["mallory"][0]
    recs = [rec]
    assert recs[0]["actor"] == mallory and recs[0]["room"] == room, recs[0]
    assert recs[0]["reason"] == "guest_contact_blocked", recs[0]
    # Ids only: the room's name, chosen by the stranger, is not copied.
    assert "hello there" not in json.dumps(recs[0])

    def mine():
        return [a for a in alerts(env, safeguarding)
                if guest["user_id"] in a["content"].get("body", "")]

    deadline = time.monotonic() + 30
    while not mine() and time.monotonic() < deadline:
        time.sleep(0.5)
    got = mine()
    assert len(got) == 1, got
    body = got[0]["content"]["body"]
    assert body.startswith("Blocked contact:") and mallory in body and room in body, body
    assert got[0]["content"]["msgtype"] == "m.notice"

    assert threshold.run("audit", "verify").returncode == 0


def test_direct_message_to_guest_is_rejected(env, threshold):
    guest = create_guest(env, threshold)
    ensure_user(env, "mallory")

    async def dm():
        async with Client.for_user(env, "mallory") as m:
            r = await m.nio.room_create(is_direct=True, invite=[guest["user_id"]])
            return r.room_id

    room = run(dm())
    wait_membership(env, "mallory", room, guest["user_id"], "leave")
    recs = audit_records(threshold, "contact_blocked", subject=guest["user_id"])
    assert len(recs) == 1 and recs[0]["details"].get("is_direct") is True, recs


def test_another_guest_cannot_invite_a_guest(env, threshold):
    """Even a guest acting through the appservice token cannot reach another guest."""
    a = create_guest(env, threshold)
    b = create_guest(env, threshold)
    r = requests.post("%s/_matrix/client/v3/createRoom?user_id=%s" % (env.hs_url, q(a["user_id"])),
                      headers=bearer(env.as_token),
                      json={"invite": [b["user_id"]], "preset": "private_chat"}, timeout=30)
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    deadline = time.monotonic() + 30
    recs = []
    while time.monotonic() < deadline:
        recs = audit_records(threshold, "contact_blocked", subject=b["user_id"])
        if recs:
            break
        time.sleep(0.3)
    assert len(recs) == 1 and recs[0]["actor"] == a["user_id"], recs
    # Guest A is itself in a room Threshold does not manage: taken out too.
    enforced = audit_records(threshold, "membership_enforced", subject=a["user_id"])
    assert len(enforced) == 1 and enforced[0]["room"] == room, enforced


def test_staff_invite_into_unmanaged_room_is_refused_with_a_reason(env, threshold):
    guest = create_guest(env, threshold)

    async def invite():
        async with Client.for_user(env, "staff") as s:
            room = await s.create_room("staff room")
            await s.invite(room, guest["user_id"])
            return room

    room = run(invite())
    content = wait_membership(env, "staff", room, guest["user_id"], "leave")
    assert "managed" in content.get("reason", ""), content
    recs = audit_records(threshold, "contact_blocked", subject=guest["user_id"])
    assert len(recs) == 1 and recs[0]["reason"] == "guest_invite_unmanaged", recs


def test_guest_found_in_unmanaged_room_is_taken_out(env, threshold):
    guest = create_guest(env, threshold)
    ensure_user(env, "mallory")

    async def public_room():
        async with Client.for_user(env, "mallory") as m:
            r = await m.nio.room_create(name="open room", preset=None,
                                        initial_state=[{"type": "m.room.join_rules",
                                                        "state_key": "",
                                                        "content": {"join_rule": "public"}}])
            return r.room_id

    room = run(public_room())
    # Only Threshold holds a token able to act for a guest; use it as a bug or a
    # compromised component would.
    r = requests.post("%s/_matrix/client/v3/join/%s?user_id=%s"
                      % (env.hs_url, q(room), q(guest["user_id"])),
                      headers=bearer(env.as_token), json={}, timeout=30)
    assert r.status_code == 200, r.text
    wait_membership(env, "mallory", room, guest["user_id"], "leave")
    recs = audit_records(threshold, "membership_enforced", subject=guest["user_id"])
    assert len(recs) == 1 and recs[0]["room"] == room, recs


def test_stranger_cannot_pull_the_bot_in_or_command_it(env, threshold):
    mallory = ensure_user(env, "mallory")

    async def scenario():
        async with Client.for_user(env, "mallory") as m:
            own = await m.create_room("mallory's room")
            await m.invite(own, env.bot)
        async with Client.for_user(env, "staff") as s:
            room = await s.create_room("with a stranger")
            await s.invite(room, env.bot)
            await s.invite(room, mallory)
            await s.wait_for_member(room, env.bot, "join", timeout=30)
        async with Client.for_user(env, "mallory") as m:
            await m.nio.join(room)
            cmd = await m.send_text(room, "!threshold ping")

            async def reply():
                return replies_to(await m.history(room), env.bot).get(cmd)

            replies = await poll(reply, timeout=30, what="the bot's answer")
        return own, replies

    own, replies = run(scenario())
    wait_membership(env, "mallory", own, env.bot, "leave")
    assert len(replies) == 1, replies
    assert "only takes commands from the organisation's staff" in replies[0]["content"]["body"]
    recs = audit_records(threshold, "contact_blocked", room=own)
    assert len(recs) == 1 and recs[0]["reason"] == "bot_invite_refused", recs
