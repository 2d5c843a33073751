"""Guests cannot be reached outside rooms the charity manages (real Synapse).

Each test makes a fresh guest with `threshold guest create`, lets a real user
try to reach it through the homeserver, and checks what that user would see
(the guest's membership, the reason given), the audit log, and the alert in
the safeguarding room.
"""

import json
import time

import requests

from helpers import (alerts, audit_records, bearer, create_guest, ensure_user, invite_permission,  # noqa: F401 (safeguarding: a fixture)
                     membership, q, safeguarding, stranger_invites_guest, wait, wait_membership)
from mx import Client, poll, replies_to, run


def test_stranger_invite_to_guest_is_rejected_audited_and_alerted(env, safeguarding, threshold):
    guest, room, rec = stranger_invites_guest(env, threshold)
    mallory = env.users["mallory_admin"][0]
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
    """Threshold's own layer: a server admin bypasses the homeserver's block
    (test_invite_blocking.py has everyone else's DM refused by Synapse)."""
    guest = create_guest(env, threshold)
    ensure_user(env, "mallory_admin", admin=True)

    async def dm():
        async with Client.for_user(env, "mallory_admin") as m:
            r = await m.nio.room_create(is_direct=True, invite=[guest["user_id"]])
            return r.room_id

    room = run(dm())
    wait_membership(env, "mallory_admin", room, guest["user_id"], "leave")
    recs = audit_records(threshold, "contact_blocked", subject=guest["user_id"])
    assert len(recs) == 1 and recs[0]["details"].get("is_direct") is True, recs


def test_another_guest_cannot_invite_a_guest(env, threshold):
    """Even a guest acting through the appservice token cannot reach another
    guest: the homeserver refuses the invite itself (the appservice is not a
    server admin, and must never be)."""
    a = create_guest(env, threshold)
    b = create_guest(env, threshold)
    wait(lambda: invite_permission(env, b["user_id"]) == "block", 30, "b's invites blocked")
    r = requests.post("%s/_matrix/client/v3/createRoom?user_id=%s" % (env.hs_url, q(a["user_id"])),
                      headers=bearer(env.as_token),
                      json={"invite": [b["user_id"]], "preset": "private_chat"}, timeout=30)
    assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text
    r = requests.get("%s/_matrix/client/v3/joined_rooms?user_id=%s" % (env.hs_url, q(b["user_id"])),
                     headers=bearer(env.as_token), timeout=30)
    assert r.status_code == 200 and r.json()["joined_rooms"] == [], r.text


def test_staff_invite_of_a_guest_is_refused_by_the_homeserver(env, threshold):
    """Staff cannot invite a guest from Element either (they add guests with
    !threshold group add): the homeserver says so at once."""
    guest = create_guest(env, threshold)
    wait(lambda: invite_permission(env, guest["user_id"]) == "block", 30, "the guest's invites blocked")

    async def room():
        async with Client.for_user(env, "staff") as s:
            return await s.create_room("staff room")

    room = run(room())
    r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (env.hs_url, q(room)),
                      headers=bearer(env.token("staff")), json={"user_id": guest["user_id"]}, timeout=30)
    assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text
    assert membership(env, "staff", room, guest["user_id"])[0] is None


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
