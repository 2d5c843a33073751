"""Helpers shared by the integration tests about guests and the safeguarding
room: users, guests, memberships, the audit log as the CLI shows it, and a
safeguarding room with a lead and the bot in it.
"""

import json
import re
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import SERVER_NAME
from mx import Client, poll, replies_to, run
from nio import RoomPreset


def wait(pred, timeout, what, step=0.05):
    """pred()'s first true value within timeout seconds, else fail naming what."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("%s: not within %ss" % (what, timeout))


def bearer(token):
    return {"Authorization": "Bearer " + token}


def q(s):
    return urllib.parse.quote(s, safe="")


def ensure_user(env, name, admin=False):
    """A user of the homeserver; not a server admin unless @admin (admins
    bypass the homeserver's block of invites to guests)."""
    if name not in env.users:
        env.add_user(name, admin=admin)
    return env.users[name][0]


def invite_permission(env, user_id):
    """The default_action of @user_id's m.invite_permission_config (spec
    v1.18), read as the user with the appservice token; None if unset."""
    r = requests.get("%s/_matrix/client/v3/user/%s/account_data/m.invite_permission_config?user_id=%s"
                     % (env.hs_url, q(user_id), q(user_id)), headers=bearer(env.as_token), timeout=30)
    return r.json().get("default_action") if r.status_code == 200 else None


def create_guest(env, threshold, profile_name=None):
    """A new guest, once the homeserver shows it with its profile name (its
    pseudonym, or profile_name when that is given)."""
    r = threshold.run("guest", "create", "--json")
    guest = json.loads(r.stdout)
    assert guest["user_id"].startswith("@guest_") and guest["user_id"].endswith(":" + SERVER_NAME)
    # The daemon's outbox registers the guest on the homeserver.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.get("%s/_synapse/admin/v2/users/%s" % (env.hs_url, q(guest["user_id"])),
                         headers=bearer(env.token("admin")), timeout=30)
        if r.status_code == 200 and r.json().get("displayname") == (profile_name or guest["pseudonym"]):
            return guest
        time.sleep(0.3)
    raise AssertionError("guest %s was not registered on the homeserver" % guest["user_id"])


def membership(env, viewer, room_id, user_id):
    r = requests.get("%s/_matrix/client/v3/rooms/%s/state/m.room.member/%s"
                     % (env.hs_url, q(room_id), q(user_id)),
                     headers=bearer(env.token(viewer)), timeout=30)
    if r.status_code != 200:
        return None, {}
    content = r.json()
    return content.get("membership"), content


def wait_membership(env, viewer, room_id, user_id, want, timeout=30):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got, content = membership(env, viewer, room_id, user_id)
        if got == want:
            return content
        time.sleep(0.2)
    raise AssertionError("%s is %r in %s, expected %r" % (user_id, got, room_id, want))


def audit_records(threshold, kind, **filters):
    args = ["audit", "list", "--kind", kind, "--format", "jsonl"]
    for key, value in filters.items():
        args += ["--" + key, value]
    out = threshold.run(*args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def safeguarding(env):
    """A safeguarding room with a lead and the bot in it, named in Threshold's config."""
    ensure_user(env, "lead")
    if not env.threshold.running():
        env.threshold.start()

    async def make():
        async with Client.for_user(env, "lead") as lead:
            # Private, as "!audit reveal" requires: invite-only, unfederated,
            # history for members only (docs/safeguarding-guide.md).
            r = await lead.nio.room_create(
                name="safeguarding " + uuid.uuid4().hex[:6], federate=False,
                preset=RoomPreset.private_chat,
                initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                "content": {"history_visibility": "joined"}}])
            room = r.room_id
            await lead.invite(room, env.bot)
            await lead.wait_for_member(room, env.bot, "join", timeout=30)
            return room

    room = run(make())
    env.safeguarding_room = room
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    yield room
    env.safeguarding_room = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def alerts(env, room):
    async def read():
        async with Client.for_user(env, "lead") as lead:
            return [ev for ev in await lead.history(room)
                    if ev.get("sender") == env.bot and ev.get("type") == "m.room.message"]
    return run(read())


def stranger_invites_guest(env, threshold, stranger="mallory_admin"):
    """A local stranger invites a fresh guest into a new room; wait for the
    guest's refusal.  Returns (guest, room, the one contact_blocked record).

    The stranger is a server admin: the homeserver refuses anyone else's
    invite of a guest itself (test_invite_blocking.py), and admins bypass
    that, so this is Threshold's own after-the-fact layer at work (as on a
    homeserver without spec v1.18)."""
    guest = create_guest(env, threshold)
    ensure_user(env, stranger, admin=True)

    async def invite():
        async with Client.for_user(env, stranger) as m:
            room = await m.create_room("hello there")
            await m.invite(room, guest["user_id"])
            return room

    room = run(invite())
    wait_membership(env, stranger, room, guest["user_id"], "leave")
    recs = audit_records(threshold, "contact_blocked", subject=guest["user_id"])
    assert len(recs) == 1, recs
    return guest, room, recs[0]


def staff_room_with_bot(env, name="staff room"):
    """A room made by staff with the bot invited and joined; its id."""
    async def make():
        async with Client.for_user(env, "staff") as s:
            room = await s.create_room(name)
            await s.invite(room, env.bot)
            await s.wait_for_member(room, env.bot, "join", timeout=30)
            return room
    return run(make())


def bot_reply(env, name, room, event_id, timeout=30):
    async def read():
        async with Client.for_user(env, name) as c:
            async def got():
                return replies_to(await c.history(room), env.bot).get(event_id)
            return (await poll(got, timeout=timeout, what="the bot's reply"))[0]
    return run(read())


def staff_says(env, room, text):
    async def send():
        async with Client.for_user(env, "staff") as s:
            return await s.send_text(room, text)
    return run(send())


def make_group(env):
    """A staff room with the bot, then a group room made through it; staff joined."""
    staff_room_id = staff_room_with_bot(env)
    cmd = staff_says(env, staff_room_id, "!threshold group create Tuesday group")
    reply = bot_reply(env, "staff", staff_room_id, cmd)
    m = re.search(r"(![A-Za-z0-9]+:%s)" % re.escape(SERVER_NAME), reply["content"]["body"])
    assert m, reply
    group = m.group(1)
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(group)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return group


def room_state(env, viewer, room_id, event_type):
    """The content of a room's state event (state key ""), or None."""
    r = requests.get("%s/_matrix/client/v3/rooms/%s/state/%s/" % (env.hs_url, q(room_id), event_type),
                     headers=bearer(env.token(viewer)), timeout=30)
    return r.json() if r.status_code == 200 else None


def wait_for(what, fn, timeout=30):
    """Call fn() until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError("timed out waiting for " + what)


def group_with_guest(env, threshold):
    """A group room made through the bot, staff joined, with a guest in it; (room, guest)."""
    group = make_group(env)
    guest = create_guest(env, threshold)
    staff_says(env, group, "!threshold group add %s" % guest["pseudonym"])
    wait_membership(env, "staff", group, guest["user_id"], "join")
    return group, guest


def make_room_admin(env, room, user):
    """Synapse's make_room_admin: a homeserver admin raises @user to 100,
    sending the power levels as the room's highest local member (the bot)."""
    r = requests.post("%s/_synapse/admin/v1/rooms/%s/make_room_admin" % (env.hs_url, q(room)),
                      headers=bearer(env.token("admin")), json={"user_id": user}, timeout=30)
    assert r.status_code == 200, r.text


def while_threshold_down(env, change):
    """Make @change with Threshold stopped, then start it again: Synapse
    delivers the events afterwards, as it would for changes made faster than
    Threshold can answer them (in a room Threshold made, only the bot holds
    the power to change its settings, so a revert is a backstop)."""
    env.threshold.stop()
    try:
        return change()
    finally:
        env.threshold.start()
