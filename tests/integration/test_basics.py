"""Threshold against a real Synapse: start-up, the bot, a command round trip.

Invites from users of other servers cannot be made here (one homeserver, no
federation); the bot's refusal of them is covered by tests/policy/cases.
"""

import uuid

import requests
from nio import ProfileGetResponse

from conftest import AS_ID, BOT_DISPLAYNAME
from mx import Client, poll, replies_to, run


def bearer(token):
    return {"Authorization": "Bearer " + token}


def test_homeserver_ping_reaches_threshold(env, threshold):
    """Synapse's ping of the appservice reaches Threshold and succeeds."""
    assert "homeserver ping: ok" in threshold.log_since_start()

    r = requests.post("%s/_matrix/client/v1/appservice/%s/ping" % (env.hs_url, AS_ID),
                      headers=bearer(env.as_token),
                      json={"transaction_id": "it-ping-" + uuid.uuid4().hex}, timeout=60)
    assert r.status_code == 200, "Synapse could not ping Threshold: %s %s" % (r.status_code,
                                                                              r.text)
    body = r.json()
    assert isinstance(body.get("duration_ms"), int) and body["duration_ms"] >= 0, body


def test_bot_is_registered_with_its_display_name(env, threshold):
    """The bot exists on the homeserver, owned by the appservice, named from the config."""
    r = requests.get("%s/_synapse/admin/v2/users/%s" % (env.hs_url, env.bot),
                     headers=bearer(env.token("admin")), timeout=30)
    assert r.status_code == 200, "bot user not found: %s %s" % (r.status_code, r.text)
    user = r.json()
    assert user.get("appservice_id") == AS_ID, user
    assert user.get("displayname") == BOT_DISPLAYNAME, user
    assert not user.get("deactivated"), user


def test_ping_command_round_trip(env, threshold):
    """Staff invite the bot, it joins, and answers `!threshold ping` with a pong reply."""

    async def scenario():
        async with Client.for_user(env, "staff") as staff:
            room = await staff.create_room("threshold ping test")
            await staff.invite(room, env.bot)
            await staff.wait_for_member(room, env.bot, "join", timeout=30)

            # Sharing a room now, staff see the bot's configured name.
            prof = await staff.profile(env.bot)
            assert isinstance(prof, ProfileGetResponse), prof
            assert prof.displayname == BOT_DISPLAYNAME

            cmd = await staff.send_text(room, "!threshold ping")

            async def pong():
                return replies_to(await staff.history(room), env.bot).get(cmd)

            replies = await poll(pong, timeout=30, what="the bot's pong")
            return room, cmd, replies

    room, cmd, replies = run(scenario())
    assert len(replies) == 1, replies
    content = replies[0]["content"]
    assert content.get("msgtype") == "m.notice", content
    assert content.get("body", "").startswith("pong"), content
    assert content["m.relates_to"]["m.in_reply_to"]["event_id"] == cmd

    st = threshold.status()
    assert st["transactions"] >= 1 and st["events_seen"] >= 3, st
    rooms = {r["room_id"]: r for r in st["rooms"]}
    assert room in rooms, "status does not list the room: %s" % st
    # The invite, the bot's join and the command were all handled before the pong.
    assert rooms[room]["events"] >= 3, rooms[room]
    assert rooms[room]["bot_membership"] == "join", rooms[room]


def test_sigterm_exits_cleanly_and_restarts(env, threshold):
    """SIGTERM stops serve with status 0; it starts again on the same store."""
    rc = threshold.stop()
    assert rc == 0, "threshold serve exited %s on SIGTERM" % rc
    threshold.start()
    assert "homeserver ping: ok" in threshold.log_since_start()
    assert isinstance(threshold.status()["transactions"], int)
