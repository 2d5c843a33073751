"""A stranger on another homeserver cannot reach a guest either.

A second, real Synapse ("localhost:<port>") federates with the test
homeserver ("localhost", federation on port 8448) over TLS on loopback.  A
user there invites a guest into a room of theirs and opens a direct message
with them, with Threshold stopped: the guest's homeserver refuses each
invite itself (m.invite_permission_config, spec v1.18 / MSC4380), so
nothing reaches the guest.  A user of the guest's homeserver who is not a
guest can still be invited from there: federation works, and the refusal
is the block's.

Skipped when port 8448 was taken when the test homeserver started (then it
has no federation listener).
"""

import os
import secrets
import sys

import pytest
import requests

from helpers import bearer, create_guest, ensure_user, invite_permission, q, wait

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "harness"))
import synapse as harness  # noqa: E402


@pytest.fixture(scope="module")
def remote(env, tmp_path_factory):
    if not env.hs.federation_port:
        pytest.skip("port 8448 was taken: the test homeserver has no federation listener")
    port = harness.free_port()
    hs = harness.Synapse(str(tmp_path_factory.mktemp("remote-synapse")),
                         server_name="localhost:%d" % port, federation_port=port)
    hs.start()
    try:
        password = secrets.token_hex(12)
        user = hs.register_user("eve", password)
        r = requests.post(hs.url + "/_matrix/client/v3/login", timeout=30,
                          json={"type": "m.login.password", "password": password,
                                "identifier": {"type": "m.id.user", "user": "eve"}})
        assert r.status_code == 200, r.text
        hs.eve = user
        hs.eve_token = r.json()["access_token"]
        yield hs
    finally:
        hs.cleanup()


def invites(env, token, user_id=None):
    """The rooms a user of the guests' homeserver is invited to (their sync)."""
    r = requests.get(env.hs_url + "/_matrix/client/v3/sync", headers=bearer(token), timeout=30,
                     params=dict({"timeout": 0}, **({"user_id": user_id} if user_id else {})))
    assert r.status_code == 200, r.text
    return r.json().get("rooms", {}).get("invite", {})


def remote_room(remote, **body):
    return requests.post(remote.url + "/_matrix/client/v3/createRoom",
                         headers=bearer(remote.eve_token), json=body, timeout=60)


def test_federation_works_for_someone_who_is_not_a_guest(env, remote):
    someone = ensure_user(env, "noor")
    r = remote_room(remote, name="hello from afar")
    assert r.status_code == 200, r.text
    room = r.json()["room_id"]
    r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (remote.url, q(room)),
                      headers=bearer(remote.eve_token), json={"user_id": someone}, timeout=60)
    assert r.status_code == 200, r.text
    wait(lambda: room in invites(env, env.token("noor")), 30, "the invite over federation")


def test_a_remote_strangers_invite_and_dm_are_refused_with_threshold_stopped(env, threshold, remote):
    guest = create_guest(env, threshold)
    gid = guest["user_id"]
    wait(lambda: invite_permission(env, gid) == "block", 30, "the guest's invites blocked")
    threshold.stop()
    try:
        r = remote_room(remote, name="hello there")
        assert r.status_code == 200, r.text
        room = r.json()["room_id"]
        r = requests.post("%s/_matrix/client/v3/rooms/%s/invite" % (remote.url, q(room)),
                          headers=bearer(remote.eve_token), json={"user_id": gid}, timeout=60)
        # The guest's homeserver answers the federated invite with 403
        # M_INVITE_BLOCKED; the remote server passes the refusal on.
        assert r.status_code == 403, r.text
        assert r.json().get("errcode") == "M_INVITE_BLOCKED", r.text
        print("remote invite of a guest:", r.status_code, r.text)
        r = remote_room(remote, invite=[gid], is_direct=True, preset="trusted_private_chat")
        if r.status_code == 200:
            # Synapse may create the room and drop the refused invite: then
            # the guest must hold no invite to it either.
            dm = r.json()["room_id"]
        else:
            assert r.status_code == 403, r.text
            dm = None
        # Nothing reached the guest: invited to nothing.
        assert invites(env, env.as_token, gid) == {}, dm
    finally:
        threshold.start()
