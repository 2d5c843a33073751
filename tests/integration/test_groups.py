"""Moderated group rooms run by the bot for staff (real Synapse).

Staff ask the bot for a group room, add a guest by pseudonym, list and remove
guests; strangers invited into the room are turned away.
"""

import requests

from helpers import (audit_records, bearer, bot_reply, create_guest, ensure_user, invite_permission,
                     make_group, q, staff_room_with_bot, staff_says, wait, wait_membership)
from mx import Client, run


def test_group_room_is_private_and_staff_can_add_list_and_remove_guests(env, threshold):
    group = make_group(env)

    # What protects the guests is set on the homeserver, not just remembered.
    def state(t):
        r = requests.get("%s/_matrix/client/v3/rooms/%s/state/%s" % (env.hs_url, q(group), t),
                         headers=bearer(env.token("staff")), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()
    assert state("m.room.join_rules")["join_rule"] == "invite"
    assert state("m.room.history_visibility")["history_visibility"] == "joined"
    assert state("m.room.create").get("m.federate") is False
    power = state("m.room.power_levels")
    assert power["users"][env.bot] == 100 and power["users"][env.users["staff"][0]] == 50, power
    assert power["events"]["m.room.join_rules"] == 100, power

    guest = create_guest(env, threshold)
    wait(lambda: invite_permission(env, guest["user_id"]) == "block", 30, "the guest's invites blocked")
    cmd = staff_says(env, group, "!threshold group add %s" % guest["pseudonym"].lower())
    wait_membership(env, "staff", group, guest["user_id"], "join")
    assert guest["pseudonym"] in bot_reply(env, "staff", group, cmd)["content"]["body"]
    # The homeserver let the bot's one invite through, and blocks again at
    # once: a stranger (not a server admin) cannot invite the guest right after.
    assert invite_permission(env, guest["user_id"]) == "block"
    ensure_user(env, "nadia")
    r = requests.post(env.hs_url + "/_matrix/client/v3/createRoom", headers=bearer(env.token("nadia")),
                      json={"invite": [guest["user_id"]], "is_direct": True}, timeout=30)
    assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text

    cmd = staff_says(env, group, "!threshold group list")
    body = bot_reply(env, "staff", group, cmd)["content"]["body"]
    assert "%s (joined)" % guest["pseudonym"] in body, body

    cmd = staff_says(env, group, "!threshold group add Nobody Atall")
    assert "No guest called" in bot_reply(env, "staff", group, cmd)["content"]["body"]

    cmd = staff_says(env, group, "!threshold group remove %s" % guest["pseudonym"])
    wait_membership(env, "staff", group, guest["user_id"], "leave")
    assert threshold.room_status(group)  # the room is known to Threshold


def test_stranger_invited_into_group_room_is_turned_away(env, threshold):
    group = make_group(env)
    mallory = ensure_user(env, "mallory")

    async def invite():
        async with Client.for_user(env, "staff") as s:
            await s.invite(group, mallory)

    run(invite())
    content = wait_membership(env, "staff", group, mallory, "leave")
    assert "managed by Threshold" in content.get("reason", ""), content
    recs = audit_records(threshold, "membership_enforced", subject=mallory, room=group)
    assert len(recs) == 1 and recs[0]["reason"] == "stranger_invite_withdrawn", recs


def test_group_commands_outside_a_group_room_are_explained(env, threshold):
    room = staff_room_with_bot(env, "another staff room")
    cmd = staff_says(env, room, "!threshold group add Someone")
    body = bot_reply(env, "staff", room, cmd)["content"]["body"]
    assert "works in a group room" in body, body
