"""The homeserver keeps strangers from guests too (spec v1.18, MSC4380):
every guest's account data m.invite_permission_config says
{"default_action": "block"}, so Synapse refuses an invite to a guest before
it exists, whether or not Threshold is running.  Strangers here are not
server admins (admins bypass the block; docs/homeserver-hardening.md).
"""

import requests

from helpers import bearer, create_guest, ensure_user, invite_permission, membership, q, wait


def test_the_log_says_which_layer_is_active(env, threshold):
    wait(lambda: "invite blocking: enforced by the homeserver" in threshold.log_since_start(), 30,
         "the invite-blocking line in the log")


def test_strangers_are_refused_by_synapse_with_threshold_stopped(env, threshold):
    guest = create_guest(env, threshold)
    gid = guest["user_id"]
    wait(lambda: invite_permission(env, gid) == "block", 30, "the guest's invites blocked")
    nadia = ensure_user(env, "nadia")  # a local user, not a server admin
    threshold.stop()
    try:
        tok = bearer(env.token("nadia"))
        # An invite into the stranger's own room.
        r = requests.post(env.hs_url + "/_matrix/client/v3/createRoom", headers=tok,
                          json={"name": "hello there"}, timeout=30)
        assert r.status_code == 200, r.text
        room = r.json()["room_id"]
        r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (env.hs_url, q(room)), headers=tok,
                          json={"user_id": gid}, timeout=30)
        assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text
        assert membership(env, "nadia", room, gid)[0] is None  # no invite event exists
        # A direct message.
        r = requests.post(env.hs_url + "/_matrix/client/v3/createRoom", headers=tok,
                          json={"invite": [gid], "is_direct": True, "preset": "trusted_private_chat"},
                          timeout=30)
        assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text
        # Nothing reached the guest: it is in no room and invited to none.
        r = requests.get("%s/_matrix/client/v3/sync?user_id=%s&timeout=0" % (env.hs_url, q(gid)),
                         headers=bearer(env.as_token), timeout=30)
        assert r.status_code == 200, r.text
        rooms = r.json().get("rooms", {})
        assert not rooms.get("invite") and not rooms.get("join"), rooms
        assert nadia.startswith("@nadia:")
    finally:
        threshold.start()
