"""Unlinkable per-room pseudonyms (guests.pseudonym_per_room), real Synapse.

The guest's profile says only "Guest"; in a group room the guest appears
under a pseudonym of that room, not the one staff know it by.
"""

import re
import time

import pytest
import requests

from helpers import bearer, create_guest, make_group, q, staff_says, wait_membership

PSEUDONYM = re.compile(r"^[A-Z][a-z]+ [A-Z][a-z]+( \d+)?$")


@pytest.fixture(scope="module")
def per_room(env):
    env.pseudonym_per_room = True
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    yield
    env.pseudonym_per_room = False
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def test_guest_has_a_neutral_profile_and_its_own_name_in_each_room(env, per_room, threshold):
    guest = create_guest(env, threshold, profile_name="Guest")
    group = make_group(env)
    staff_says(env, group, "!threshold group add %s" % guest["pseudonym"])
    wait_membership(env, "staff", group, guest["user_id"], "join")

    deadline = time.monotonic() + 30
    name = None
    while time.monotonic() < deadline:
        r = requests.get("%s/_matrix/client/v3/rooms/%s/state/m.room.member/%s"
                         % (env.hs_url, q(group), q(guest["user_id"])),
                         headers=bearer(env.token("staff")), timeout=30)
        name = r.json().get("displayname") if r.status_code == 200 else None
        if name and name != "Guest":
            break
        time.sleep(0.2)
    assert name and PSEUDONYM.match(name), name
    assert name != guest["pseudonym"], "the room shows the name staff know the guest by"

    r = requests.get("%s/_synapse/admin/v2/users/%s" % (env.hs_url, q(guest["user_id"])),
                     headers=bearer(env.token("admin")), timeout=30)
    assert r.json().get("displayname") == "Guest", r.json()
