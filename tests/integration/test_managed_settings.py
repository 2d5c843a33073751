"""Settings of a managed room that would expose its guests are put back to the
room's own template value (real Synapse).

In a room Threshold makes only the bot (100) may change who can get in, who
reads back, power levels, aliases, guest access or encryption; staff hold 50.
So the revert is a backstop, and these tests play what gets past the power
levels:
- a homeserver admin's make_room_admin (or anything else holding the AS
  token) acting *as the bot*: judged like anyone's change, by its content;
- someone who already holds 100 and changes settings faster than Threshold
  answers: played by making the changes while Threshold is stopped, so that
  Threshold sees them only afterwards, as Synapse delivers the backlog.
"""

import time
import uuid

import pytest
import requests

from conftest import SERVER_NAME
from gateway import Guest, join_portal, wait_gateway
from helpers import (alerts, audit_records, bearer, ensure_user, group_with_guest,  # noqa: F401 (safeguarding: a fixture)
                     make_group, make_room_admin, membership, q, room_state, safeguarding, staff_room_with_bot, wait_for,
                     while_threshold_down)
from mx import Client, run


@pytest.fixture(scope="module")
def service(env, safeguarding):
    """A service "helpline" whose staff room holds staff and the bot, beside
    the safeguarding room; put back as it was afterwards."""
    staff_room = staff_room_with_bot(env, "Helpline staff")
    env.services = {"helpline": {
        "display_name": "Test Helpline",
        "staff_room": staff_room,
        "greeting": "Hello.",
        "notice_version": "1",
        "notice": {"en": "Test helpline."},
        "public_entry": True,
        "public_per_hour": 1000,
    }}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"staff_room": staff_room}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def state(env, room, event_type, who="staff"):
    return room_state(env, who, room, event_type)


def put_state(env, room, event_type, content, token, as_user=None, want=200):
    url = "%s/_matrix/client/v3/rooms/%s/state/%s/" % (env.hs_url, q(room), event_type)
    if as_user:
        url += "?user_id=" + q(as_user)
    r = requests.put(url, headers=bearer(token), json=content, timeout=30)
    assert r.status_code == want, r.text
    return r


def as_bot(env, room, event_type, content):
    """A state change sent as the bot that Threshold did not make (what a
    homeserver admin's make_room_admin, or anything holding the AS token, does)."""
    return put_state(env, room, event_type, content, env.as_token, as_user=env.bot)


def reverts(threshold, room, setting=None):
    recs = audit_records(threshold, "state_reverted", room=room)
    return [r for r in recs if setting is None or r["details"].get("setting") == setting]


def level(power, user):
    return power.get("users", {}).get(user, power.get("users_default", 0))


def conversation(env, service):
    """A guest's conversation room, staff joined; (room, guest)."""
    guest = Guest(env.gw_url)
    guest.redeem(service="helpline")
    return join_portal(env, service["staff_room"], guest.pseudonym), guest


def colleague_in_staff_room(env, staff_room):
    """A second staff member, joined to the service's staff room (not an admin)."""
    user = ensure_user(env, "colleague")

    async def join():
        async with Client.for_user(env, "staff") as s:
            await s.invite(staff_room, user)
    run(join())
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(staff_room)),
                      headers=bearer(env.token("colleague")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return user


def test_conversation_put_back_to_its_own_template(env, safeguarding, service, threshold):
    """Someone holding 100 opens the join rule, the history, guest access and
    users_default of a conversation: each goes back to the conversation's own
    value (restricted to its staff room, shared history), recorded and
    alerted, and a colleague can still join it afterwards."""
    room, _guest = conversation(env, service)
    staff = env.users["staff"][0]
    template_rule = state(env, room, "m.room.join_rules")
    assert template_rule == {"join_rule": "restricted", "allow": [
        {"type": "m.room_membership", "room_id": service["staff_room"]}]}, template_rule
    assert state(env, room, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert level(state(env, room, "m.room.power_levels"), staff) == 50

    def change():
        make_room_admin(env, room, staff)
        tok = env.token("staff")
        put_state(env, room, "m.room.join_rules", {"join_rule": "public"}, tok)
        put_state(env, room, "m.room.history_visibility", {"history_visibility": "world_readable"}, tok)
        put_state(env, room, "m.room.guest_access", {"guest_access": "can_join"}, tok)
        power = state(env, room, "m.room.power_levels")
        power["users_default"] = 100
        put_state(env, room, "m.room.power_levels", power, tok)
    while_threshold_down(env, change)

    wait_for("the join rule back to the conversation's own",
             lambda: state(env, room, "m.room.join_rules") == template_rule, timeout=60)
    wait_for("shared history back", lambda: state(env, room, "m.room.history_visibility")
             == {"history_visibility": "shared"}, timeout=60)
    wait_for("guest access forbidden", lambda: state(env, room, "m.room.guest_access")
             == {"guest_access": "forbidden"}, timeout=60)
    power = wait_for("users_default back to the conversation's own (staff's level)",
                     lambda: (lambda p: p if p.get("users_default") == 50 else None)(
                         state(env, room, "m.room.power_levels")), timeout=60)
    assert level(power, env.bot) == 100 and power["events"]["m.room.encryption"] == 100, power
    # Matrix does not let the bot lower someone at its own level: staff keep
    # 100, and Threshold says so rather than claiming it put it back.
    assert level(power, staff) == 100, power

    recs = wait_for("the records", lambda: (lambda r: r if len(r) >= 4 else None)(reverts(threshold, room)))
    by_setting = {r["details"]["setting"]: r for r in recs}
    assert by_setting["join_rules"]["actor"] == staff
    assert by_setting["join_rules"]["details"]["exposure"] == "opened"
    assert by_setting["join_rules"]["details"]["template"] == "conversation"
    assert by_setting["history_visibility"]["actor"] == staff
    assert by_setting["guest_access"]["details"]["exposure"] == "guest_access"
    assert any(r["actor"] == staff and r["details"]["exposure"] == "users_default_raised"
               and r["details"]["cannot_demote"] == [staff] for r in recs
               if r["details"]["setting"] == "power_levels"), recs
    stuck = wait_for("the record that it could not be undone",
                     lambda: [r for r in audit_records(threshold, "enforcement_failed", room=room)
                              if r["reason"] == "state_cannot_revert"])
    assert stuck[0]["details"]["cannot_demote"] == [staff], stuck

    body = wait_for("the alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                           if room in a["content"].get("body", "")
                                           and "m.room.join_rules" in a["content"]["body"]])
    assert "putting back the room's own conversation setting" in body[0], body
    urgent = wait_for("the urgent alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                                   if room in a["content"].get("body", "")
                                                   and a["content"]["body"].startswith("URGENT")])
    assert staff in urgent[0] and "cannot put it back" in urgent[0], urgent

    # A colleague from the staff room can still join the conversation.
    colleague_in_staff_room(env, service["staff_room"])
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(room)),
                      headers=bearer(env.token("colleague")), json={}, timeout=30)
    assert r.status_code == 200, r.text

    # Threshold's own reverts came back to it as events: nothing loops.
    n = len(reverts(threshold, room))
    time.sleep(2)
    assert len(reverts(threshold, room)) == n


def test_power_change_sent_as_the_bot_is_judged(env, safeguarding, threshold):
    """A power-level change sent as the bot that Threshold did not make (as
    make_room_admin's) giving a guest 50 and staff 100: the guest goes back
    to 0 and the record names the bot; staff, now at the bot's own level,
    cannot be lowered by it, which is recorded and alerted as such."""
    group, guest = group_with_guest(env, threshold)
    staff = env.users["staff"][0]
    power = state(env, group, "m.room.power_levels")
    assert level(power, staff) == 50 and level(power, env.bot) == 100, power
    power["users"][staff] = 100
    power["users"][guest["user_id"]] = 50
    as_bot(env, group, "m.room.power_levels", power)

    fixed = wait_for("the guest back at 0", lambda: (lambda p: p if level(p, guest["user_id"]) == 0 else None)(
        state(env, group, "m.room.power_levels")))
    assert level(fixed, env.bot) == 100 and level(fixed, staff) == 100, fixed
    recs = wait_for("the record", lambda: reverts(threshold, group, "power_levels"))
    assert len(recs) == 1, recs
    assert recs[0]["actor"] == env.bot and recs[0]["details"]["exposure"] == "guest_power", recs
    assert recs[0]["details"]["cannot_demote"] == [staff], recs
    stuck = wait_for("enforcement_failed", lambda: audit_records(threshold, "enforcement_failed", room=group))
    assert stuck[0]["reason"] == "state_cannot_revert" and stuck[0]["actor"] == env.bot, stuck
    body = wait_for("the alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                           if group in a["content"].get("body", "")
                                           and "guest_power" in a["content"]["body"]])
    assert env.bot in body[0] and "cannot lower" in body[0], body
    # Its own revert came back once (the stuck record); nothing loops.
    time.sleep(2)
    assert len(reverts(threshold, group, "power_levels")) == 1
    assert len(audit_records(threshold, "enforcement_failed", room=group)) == 1


def test_users_default_events_level_and_guest_access_are_put_back(env, threshold):
    group, _guest = group_with_guest(env, threshold)
    template = state(env, group, "m.room.power_levels")
    assert template["users_default"] == 0 and template["events"]["m.room.encryption"] == 100, template

    raised = dict(template, users_default=50)
    as_bot(env, group, "m.room.power_levels", raised)
    wait_for("users_default back at 0",
             lambda: state(env, group, "m.room.power_levels")["users_default"] == 0)
    lowered = dict(template, events=dict(template["events"], **{"m.room.encryption": 0}))
    as_bot(env, group, "m.room.power_levels", lowered)
    wait_for("encryption's level back at 100",
             lambda: state(env, group, "m.room.power_levels")["events"]["m.room.encryption"] == 100)
    as_bot(env, group, "m.room.guest_access", {"guest_access": "can_join"})
    wait_for("guest access forbidden",
             lambda: state(env, group, "m.room.guest_access") == {"guest_access": "forbidden"})
    exposures = sorted(r["details"]["exposure"] for r in wait_for(
        "three records", lambda: (lambda r: r if len(r) >= 3 else None)(reverts(threshold, group))))
    # users_default 50 raised the guest (not listed in a group) to 50: the
    # record names that, the first thing the change exposed.
    assert exposures == ["guest_access", "guest_power", "level_lowered"], exposures


def test_published_alias_and_directory_are_taken_back(env, threshold):
    """A canonical alias set as the bot is emptied, and the room, published to
    the directory by a homeserver admin (no event shows that), is taken off."""
    group, _guest = group_with_guest(env, threshold)
    alias = "#group-%s:%s" % (uuid.uuid4().hex[:8], SERVER_NAME)
    r = requests.put("%s/_matrix/client/v3/directory/room/%s" % (env.hs_url, q(alias)),
                     headers=bearer(env.token("staff")), json={"room_id": group}, timeout=30)
    assert r.status_code == 200, r.text
    directory = "%s/_matrix/client/v3/directory/list/room/%s" % (env.hs_url, q(group))
    r = requests.put(directory, headers=bearer(env.token("admin")), json={"visibility": "public"}, timeout=30)
    assert r.status_code == 200, r.text
    assert requests.get(directory, timeout=30).json() == {"visibility": "public"}
    as_bot(env, group, "m.room.canonical_alias", {"alias": alias})

    wait_for("the canonical alias emptied", lambda: state(env, group, "m.room.canonical_alias") == {})
    wait_for("the room off the directory",
             lambda: requests.get(directory, timeout=30).json() == {"visibility": "private"})
    recs = wait_for("the record", lambda: reverts(threshold, group, "canonical_alias"))
    assert len(recs) == 1 and recs[0]["details"]["exposure"] == "alias", recs
    time.sleep(2)
    assert len(reverts(threshold, group, "canonical_alias")) == 1


def test_staff_cannot_turn_on_encryption(env, service, threshold):
    """Encryption is the bot's alone (100): the homeserver refuses staff."""
    group = make_group(env)
    room, _guest = conversation(env, service)
    for r in (group, room):
        put_state(env, r, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, env.token("staff"),
                  want=403)
        assert state(env, r, "m.room.encryption") is None


def test_refused_removal_is_recorded_as_refused(env, safeguarding, threshold):
    """A homeserver admin's make_room_admin for a stranger: the stranger is
    given the bot's level (sent as the bot), then invited.  Threshold withdraws
    the invite, the homeserver refuses (nobody may remove someone at their own
    level), and the record and alert say it was refused, not done."""
    group, _guest = group_with_guest(env, threshold)
    stranger = ensure_user(env, "mallory_admin")
    make_room_admin(env, group, stranger)

    failed = wait_for("enforcement_failed for the withdrawal",
                      lambda: [r for r in audit_records(threshold, "enforcement_failed", room=group)
                               if r["reason"] == "stranger_invite_withdrawn"])
    assert failed[0]["subject"] == stranger and failed[0]["actor"] == env.bot, failed
    assert failed[0]["details"]["op"] == "kick" and failed[0]["details"]["refused"].startswith("HTTP 403"), failed
    body = wait_for("the alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                           if a["content"].get("body", "").startswith("Threshold could NOT remove "
                                                                                     + stranger)])
    assert group in body[0] and "HTTP 403" in body[0], body
    # The refusal is the homeserver's: the stranger is still invited.
    assert membership(env, "staff", group, stranger)[0] == "invite"


def test_encryption_that_lands_is_recorded_and_alerted(env, safeguarding, threshold):
    """Encryption turned on as the bot (something holding the AS token): it
    cannot be undone, so nothing is sent back; the record and an urgent alert
    say so."""
    group, _guest = group_with_guest(env, threshold)
    as_bot(env, group, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    recs = wait_for("the record", lambda: audit_records(threshold, "encryption_enabled", room=group))
    assert recs[0]["actor"] == env.bot and recs[0]["details"]["action"] == "none_possible", recs
    body = wait_for("the alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                           if a["content"].get("body", "").startswith("URGENT")
                                           and group in a["content"]["body"]])
    assert "turned on encryption" in body[0] and "cannot be undone" in body[0], body
    assert reverts(threshold, group) == []
