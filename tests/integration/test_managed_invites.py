"""In a managed room only staff (and the bot) bring people in (real Synapse).

A guest or a stranger who is somehow able to invite in a managed room has
the invitation withdrawn at once, whoever it was for; staff inviting staff
or guests goes on working.  In a group room nobody below staff's power may
invite, so, as a room whose settings were loosened would, staff (raised to
100 by a homeserver admin) first let everyone invite; the guest then acts
through the appservice token, as a bug or a compromised component would.
"""

import time

import requests

from helpers import (audit_records, bearer, create_guest, ensure_user, group_with_guest, make_room_admin,
                     membership, q, room_state, wait_for, wait_membership, while_threshold_down)
from mx import Client, run


def test_a_guests_invite_of_staff_is_withdrawn_and_staffs_is_not(env, threshold):
    lead = ensure_user(env, "lead")
    group, guest = group_with_guest(env, threshold)

    def loosen_and_invite():
        make_room_admin(env, group, env.users["staff"][0])
        power = room_state(env, "staff", group, "m.room.power_levels")
        power["invite"] = 0
        r = requests.put("%s/_matrix/client/v3/rooms/%s/state/m.room.power_levels/" % (env.hs_url, q(group)),
                         headers=bearer(env.token("staff")), json=power, timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post("%s/_matrix/client/v3/rooms/%s/invite?user_id=%s"
                          % (env.hs_url, q(group), q(guest["user_id"])),
                          headers=bearer(env.as_token), json={"user_id": lead}, timeout=30)
        assert r.status_code == 200, r.text
    while_threshold_down(env, loosen_and_invite)
    content = wait_membership(env, "staff", group, lead, "leave", timeout=60)
    assert "only staff may invite" in content.get("reason", ""), content
    recs = audit_records(threshold, "membership_enforced", subject=lead, room=group)
    assert len(recs) == 1, recs
    assert recs[0]["reason"] == "inviter_not_staff" and recs[0]["actor"] == guest["user_id"], recs

    # Staff inviting staff is left alone: the lead stays invited.  Staff
    # cannot invite a guest at all: the homeserver refuses it (guests come
    # in through !threshold group add, test_groups.py).
    other = create_guest(env, threshold)

    async def staff_invites():
        async with Client.for_user(env, "staff") as s:
            await s.invite(group, lead)
    run(staff_invites())
    wait_for("the guest's invites blocked",
             lambda: requests.get("%s/_matrix/client/v3/user/%s/account_data/m.invite_permission_config?user_id=%s"
                                  % (env.hs_url, q(other["user_id"]), q(other["user_id"])),
                                  headers=bearer(env.as_token), timeout=30).status_code == 200)
    r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (env.hs_url, q(group)),
                      headers=bearer(env.token("staff")), json={"user_id": other["user_id"]}, timeout=30)
    assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text
    time.sleep(2)
    assert membership(env, "staff", group, lead)[0] == "invite"
    assert len(audit_records(threshold, "membership_enforced", subject=lead, room=group)) == 1
