"""Room kinds and staff status against the real Synapse (docs/policy.md).

Two services, each with a staff room.  A conversation room is one guest's:
"group add" there is refused and nobody joins.  A group belongs to the
service it was made for: its staff may add that service's guests, not
another's.  Someone who leaves a service's staff room is no longer its staff,
and is taken out of its conversations at once: they read nothing more.

"vol" is staff only by being in the helpline's staff room (roles.staff names
only "staff", who is staff everywhere).
"""

import json
import re
import time

import pytest
import yaml
import requests

from conftest import SERVER_NAME
from gateway import Guest, invite_link_token, join_portal, wait_gateway
from helpers import (audit_records, bearer, bot_reply, ensure_user, membership, q, staff_room_with_bot,
                     wait, wait_membership)
from mx import Client, run


def restart(env):
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)


@pytest.fixture(scope="module")
def services(env):
    """helpline (staff room A: staff, vol, the bot) and advice (staff room B:
    staff and the bot); the daemon restarted with both configured."""
    if not env.threshold.running():
        env.threshold.start()
    vol = ensure_user(env, "vol")
    room_a = staff_room_with_bot(env, "Helpline staff")
    room_b = staff_room_with_bot(env, "Advice staff")

    async def vol_joins():
        async with Client.for_user(env, "staff") as s:
            await s.invite(room_a, vol)
        async with Client.for_user(env, "vol") as v:
            await v.nio.join(room_a)
    run(vol_joins())
    notice = {"en": "Run by the test charity."}
    env.services = {
        "helpline": {"display_name": "Helpline", "staff_room": room_a, "greeting": "Hello.",
                     "notice_version": "1", "notice": notice},
        "advice": {"display_name": "Advice", "staff_room": room_b, "greeting": "Hello.",
                   "notice_version": "1", "notice": notice},
    }
    restart(env)
    wait(lambda: "staff room %s: 3 joined" % room_a in env.threshold.log_since_start(), 30,
         "the read of the helpline staff room")
    yield {"a": room_a, "b": room_b, "vol": vol}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def new_guest(env, threshold, service):
    r = threshold.run("invite", "create", "--service", service, "--json")
    guest = Guest(env.gw_url)
    guest.redeem(invite=invite_link_token(json.loads(r.stdout)["link"]))
    return guest


def says(env, who, room, text):
    async def send():
        async with Client.for_user(env, who) as c:
            return await c.send_text(room, text)
    return run(send())


def guests_in(env, room, viewer="staff"):
    """The guests joined to or invited into @room, as @viewer's client sees them."""
    r = requests.get("%s/_matrix/client/v3/rooms/%s/members" % (env.hs_url, q(room)),
                     headers=bearer(env.token(viewer)), timeout=30)
    assert r.status_code == 200, r.text
    return sorted(ev["state_key"] for ev in r.json()["chunk"]
                  if ev["state_key"].startswith("@guest_")
                  and ev["content"].get("membership") in ("join", "invite"))


def make_group(env, who, staff_room):
    """A group made by @who in @staff_room; @who joined to it."""
    cmd = says(env, who, staff_room, "!threshold group create Tuesday group")
    body = bot_reply(env, who, staff_room, cmd)["content"]["body"]
    m = re.search(r"(![A-Za-z0-9]+:%s)" % re.escape(SERVER_NAME), body)
    assert m, body
    group = m.group(1)
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(group)),
                      headers=bearer(env.token(who)), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return group


def test_group_add_in_a_conversation_room_is_refused(env, threshold, services):
    first = new_guest(env, threshold, "helpline")
    portal = join_portal(env, services["a"], first.pseudonym)
    wait(lambda: len(guests_in(env, portal)) == 1, 30, "the guest in their conversation")
    owner = guests_in(env, portal)
    other = new_guest(env, threshold, "helpline")

    cmd = says(env, "staff", portal, "!threshold group add %s" % other.pseudonym)
    body = bot_reply(env, "staff", portal, cmd)["content"]["body"]
    assert "works in a group room" in body and "nobody was added" in body, body
    time.sleep(2)  # what the outbox would have done by now, had it been asked
    assert guests_in(env, portal) == owner
    recs = [r for r in audit_records(threshold, "contact_blocked", room=portal)
            if r["reason"] == "group_command_wrong_room"]
    assert len(recs) == 1 and recs[0]["actor"] == env.users["staff"][0], recs
    # The other guest's page shows nothing of this conversation.
    other.poll(timeout_ms=500)
    assert not [e for e in other.seen if e.get("from", {}).get("role") == "staff"], other.seen


def test_group_add_of_another_services_guest_is_refused(env, threshold, services):
    group = make_group(env, "vol", services["a"])
    stranger_to_group = new_guest(env, threshold, "advice")
    cmd = says(env, "vol", group, "!threshold group add %s" % stranger_to_group.pseudonym)
    body = bot_reply(env, "vol", group, cmd)["content"]["body"]
    assert "another service" in body and "Nobody was added" in body, body
    time.sleep(2)
    assert guests_in(env, group, "vol") == []
    recs = [r for r in audit_records(threshold, "contact_blocked", room=group)
            if r["reason"] == "group_add_other_service"]
    assert len(recs) == 1 and recs[0]["actor"] == services["vol"], recs
    assert recs[0]["subject"].startswith("@guest_"), recs

    # Nor may vol add advice's guest to advice's own group: vol is not in
    # advice's staff room.
    advice_group = make_group(env, "staff", services["b"])

    async def bring_vol():
        async with Client.for_user(env, "staff") as s:
            await s.invite(advice_group, services["vol"])
        async with Client.for_user(env, "vol") as v:
            await v.nio.join(advice_group)
    run(bring_vol())
    wait_membership(env, "staff", advice_group, services["vol"], "join")
    cmd = says(env, "vol", advice_group, "!threshold group add %s" % stranger_to_group.pseudonym)
    body = bot_reply(env, "vol", advice_group, cmd)["content"]["body"]
    assert "whose staff room you are in" in body, body
    recs = [r for r in audit_records(threshold, "contact_blocked", room=advice_group)
            if r["reason"] == "group_add_not_service_staff"]
    assert len(recs) == 1, recs
    # ...while advice's staff may.
    cmd = says(env, "staff", advice_group, "!threshold group add %s" % stranger_to_group.pseudonym)
    assert stranger_to_group.pseudonym in bot_reply(env, "staff", advice_group, cmd)["content"]["body"]
    wait(lambda: len(guests_in(env, advice_group)) == 1, 30, "the advice guest in advice's group")

    # The control: the group's own service's guest is added.
    own = new_guest(env, threshold, "helpline")
    cmd = says(env, "vol", group, "!threshold group add %s" % own.pseudonym)
    assert own.pseudonym in bot_reply(env, "vol", group, cmd)["content"]["body"]
    wait(lambda: len(guests_in(env, group, "vol")) == 1, 30, "the helpline guest in the group")


def member_event_ts(env, viewer, room, user, membership):
    """origin_server_ts of the latest m.room.member event making @user's
    membership of @room @membership, as @viewer's client reads the timeline."""
    flt = json.dumps({"types": ["m.room.member"]})
    r = requests.get("%s/_matrix/client/v3/rooms/%s/messages" % (env.hs_url, q(room)),
                     params={"dir": "b", "limit": 50, "filter": flt},
                     headers=bearer(env.token(viewer)), timeout=30)
    assert r.ok, r.text
    for e in r.json().get("chunk", []):
        if e.get("state_key") == user and e.get("content", {}).get("membership") == membership:
            return e["origin_server_ts"]
    raise AssertionError("no %s of %s in %s" % (membership, user, room))


def test_staff_who_leave_the_staff_room_are_out_of_its_conversations(env, threshold, services):
    guest = new_guest(env, threshold, "helpline")
    portal = join_portal(env, services["a"], guest.pseudonym)
    vol = services["vol"]
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(portal)),
                      headers=bearer(env.token("vol")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    guest.send("before")
    wait_membership(env, "staff", portal, vol, "join")

    async def leave():
        async with Client.for_user(env, "vol") as v:
            await v.nio.room_leave(services["a"])
    run(leave())
    left = time.monotonic()
    content = wait_membership(env, "staff", portal, vol, "leave", timeout=10)
    took = time.monotonic() - left
    assert content.get("reason") == "Your access to this service's conversations has ended.", content
    # How long vol could still read: from the leave to the kick, on the
    # homeserver's own clock (both events' origin_server_ts), printed for the
    # record; the client-side figure adds this test's polling.  Threshold
    # kicks within tens of ms of seeing the leave; the rest is the
    # homeserver's delivery of the event to the application service.
    left_ts = member_event_ts(env, "staff", services["a"], vol, "leave")
    kicked_ts = member_event_ts(env, "staff", portal, vol, "leave")
    print("staff removal: %d ms from the leave to the kick (homeserver clock), %.2f s seen by a "
          "polling client" % (kicked_ts - left_ts, took))
    assert 0 <= kicked_ts - left_ts < 5000 and took < 5, (kicked_ts - left_ts, took)
    recs = audit_records(threshold, "membership_enforced", subject=vol, room=portal)
    assert len(recs) == 1 and recs[0]["reason"] == "staff_status_ended", recs
    assert recs[0]["details"] == {"left_staff_room": services["a"]}, recs

    # The guest is told, as when anyone of staff leaves.
    guest.wait_for(lambda e: e["kind"] == "notice" and e["body"].endswith("has left the conversation."),
                   what="the notice that vol left")
    # A guest message sent after reaches staff, and not vol's client.
    guest.send("after vol left")

    async def staff_sees():
        async with Client.for_user(env, "staff") as s:
            return [e.get("content", {}).get("body") for e in await s.history(portal)]
    wait(lambda: "after vol left" in run(staff_sees()), 30, "the message in the room")
    r = requests.get("%s/_matrix/client/v3/rooms/%s/messages?dir=b&limit=50" % (env.hs_url, q(portal)),
                     headers=bearer(env.token("vol")), timeout=30)
    bodies = [e.get("content", {}).get("body") for e in r.json().get("chunk", [])] if r.ok else []
    assert "after vol left" not in bodies, bodies
    r = requests.get("%s/_matrix/client/v3/sync?timeout=0" % env.hs_url,
                     headers=bearer(env.token("vol")), timeout=30)
    assert "after vol left" not in r.text
    # Staff of the other service's rooms are untouched: staff is still there.
    assert membership(env, "staff", portal, env.users["staff"][0])[0] == "join"


def restart_with_staff(env, extra):
    """Restart with roles.staff naming "staff" and @extra."""
    env.write_config()
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["roles"]["staff"] = [env.users["staff"][0]] + extra
    with open(env.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)


def test_staff_dropped_from_the_config_are_out_at_the_next_start(env, threshold, services):
    former = ensure_user(env, "former")
    restart_with_staff(env, [former])
    guest = new_guest(env, threshold, "helpline")
    portal = join_portal(env, services["a"], guest.pseudonym)

    # Not in the staff room: "staff" hands the conversation over (the bot invites).
    says(env, "staff", portal, "!threshold handover %s" % former)
    wait_membership(env, "staff", portal, former, "invite")

    async def join():
        async with Client.for_user(env, "former") as c:
            await c.nio.join(portal)
    run(join())
    wait_membership(env, "staff", portal, former, "join")
    time.sleep(1)  # Threshold has seen the join: still there, still staff
    assert membership(env, "staff", portal, former)[0] == "join"

    restart_with_staff(env, [])
    content = wait_membership(env, "staff", portal, former, "leave", timeout=15)
    assert content.get("reason") == "Your access to this service's conversations has ended.", content
    recs = audit_records(threshold, "membership_enforced", subject=former, room=portal)
    assert len(recs) == 1 and recs[0]["reason"] == "staff_status_ended", recs
    assert recs[0]["details"] == {"cause": "roles_changed"}, recs
    # "staff", still configured, stays.
    assert membership(env, "staff", portal, env.users["staff"][0])[0] == "join"
