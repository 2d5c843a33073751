"""Settings of a managed room that would expose its guests are put back (real Synapse).

In a group room only the bot (100) may change power levels or aliases, so
these rules are a second line of defence; to exercise them a homeserver
admin raises staff to 100 (Synapse's make_room_admin, which acts as the bot:
the bot's own change, never undone).  Staff then give a guest power and
publish an alias; Threshold puts both back, audits and alerts, and does not
loop on its own corrections.
"""

import time
import uuid

import requests

from conftest import SERVER_NAME
from helpers import (alerts, audit_records, bearer, group_with_guest_and_admin_staff, q,  # noqa: F401 (safeguarding: a fixture)
                     room_state, safeguarding, wait_for)


def state(env, room, event_type):
    return room_state(env, "staff", room, event_type)


def put_state(env, room, event_type, content):
    r = requests.put("%s/_matrix/client/v3/rooms/%s/state/%s/" % (env.hs_url, q(room), event_type),
                     headers=bearer(env.token("staff")), json=content, timeout=30)
    assert r.status_code == 200, r.text


def reverts(threshold, group):
    return audit_records(threshold, "state_reverted", room=group)


def test_guest_given_power_is_put_back(env, safeguarding, threshold):
    group, guest = group_with_guest_and_admin_staff(env, threshold)
    staff = env.users["staff"][0]
    # make_room_admin's change was the bot's own: not undone, not audited.
    assert reverts(threshold, group) == []

    power = state(env, group, "m.room.power_levels")
    power["users"][guest["user_id"]] = 50
    put_state(env, group, "m.room.power_levels", power)

    fixed = wait_for("the guest's power back at 0",
                     lambda: (lambda p: p if p["users"].get(guest["user_id"], 0) == 0 else None)(
                         state(env, group, "m.room.power_levels")))
    assert fixed["users"][env.bot] == 100, fixed
    assert fixed["users"][staff] == 100, fixed  # the rest of the content is kept
    recs = wait_for("the state_reverted record", lambda: reverts(threshold, group))
    assert len(recs) == 1 and recs[0]["actor"] == staff and recs[0]["reason"] == "state_reverted", recs

    body = wait_for("the alert", lambda: [a["content"]["body"] for a in alerts(env, safeguarding)
                                           if group in a["content"].get("body", "")
                                           and "m.room.power_levels" in a["content"]["body"]])
    assert "Threshold put it back" in body[0], body

    # Its own correction comes back to it as an event: no second revert.
    time.sleep(2)
    assert len(reverts(threshold, group)) == 1


def test_published_alias_is_taken_back(env, threshold):
    group, _guest = group_with_guest_and_admin_staff(env, threshold)
    alias = "#group-%s:%s" % (uuid.uuid4().hex[:8], SERVER_NAME)
    r = requests.put("%s/_matrix/client/v3/directory/room/%s" % (env.hs_url, q(alias)),
                     headers=bearer(env.token("staff")), json={"room_id": group}, timeout=30)
    assert r.status_code == 200, r.text
    put_state(env, group, "m.room.canonical_alias", {"alias": alias})

    wait_for("the canonical alias emptied",
             lambda: state(env, group, "m.room.canonical_alias") == {})
    recs = wait_for("the state_reverted record", lambda: reverts(threshold, group))
    assert len(recs) == 1 and recs[0]["actor"] == env.users["staff"][0], recs

    # An empty alias (what the bot set) is safe: nothing more happens.
    time.sleep(2)
    assert len(reverts(threshold, group)) == 1
