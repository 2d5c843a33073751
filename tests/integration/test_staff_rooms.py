"""Staff by room membership: roles.staff_rooms (real Synapse).

Whoever is joined to a configured staff room is staff, and stops being staff
on leaving it.  Nobody here is in roles.staff: carol makes the room, the
admin names it in the config, carol invites the bot, and what the bot
answers shows who Threshold takes for staff.
"""

import time

from helpers import audit_records, ensure_user, wait_membership
from mx import Client, poll, replies_to, run

PONG = "pong"
REFUSAL = "only takes commands from the organisation's staff"


def wait_log(threshold, text, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in threshold.log_since_start():
            return
        time.sleep(0.2)
    raise AssertionError("threshold did not log %r within %ds" % (text, timeout))


def ask(env, name, room, text="!threshold ping"):
    """Send a command as name; the body of the bot's one reply to it."""
    async def go():
        async with Client.for_user(env, name) as c:
            cmd = await c.send_text(room, text)

            async def reply():
                return replies_to(await c.history(room), env.bot).get(cmd)
            replies = await poll(reply, timeout=30, what="the bot's reply")
            assert len(replies) == 1, replies
            return replies[0]["content"]["body"]
    return run(go())


def restart(env):
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def test_staff_room_members_are_staff_until_they_leave(env, threshold):
    ensure_user(env, "carol")
    dave = ensure_user(env, "dave")

    async def make():
        async with Client.for_user(env, "carol") as c:
            return await c.create_room("staff team")
    room = run(make())
    env.staff_rooms = [room]
    restart(env)
    try:
        # Anyone in a staff room may bring the bot in: it joins, then reads
        # who is there (carol joined before it could see).
        async def invite_bot():
            async with Client.for_user(env, "carol") as c:
                await c.invite(room, env.bot)
                await c.wait_for_member(room, env.bot, "join", timeout=30)
        run(invite_bot())
        wait_log(env.threshold, "staff room %s: 2 joined" % room)
        # Started before the bot was in the room: it did not try to read it
        # then (a refused read logs an alarming "dropped staff_members").
        assert "dropped staff_members" not in env.threshold.log_since_start()
        assert PONG in ask(env, "carol", room)
        # Inviting the bot into a staff room is not a blocked contact.
        assert not audit_records(env.threshold, "contact_blocked", room=room)

        # Dave joins the staff room: staff from then on, anywhere.
        async def dave_joins():
            async with Client.for_user(env, "carol") as c:
                await c.invite(room, dave)
            async with Client.for_user(env, "dave") as d:
                await d.nio.join(room)
                own = await d.create_room("dave's room")
                await d.invite(own, env.bot)
                await d.wait_for_member(own, env.bot, "join", timeout=30)
                return own
        own = run(dave_joins())
        assert PONG in ask(env, "dave", own)

        # Dave leaves: no longer staff, in his own room as anywhere.
        async def dave_leaves():
            async with Client.for_user(env, "dave") as d:
                await d.nio.room_leave(room)
        run(dave_leaves())
        wait_membership(env, "carol", room, dave, "leave")
        assert REFUSAL in ask(env, "dave", own)

        # What Threshold learnt is kept, and read again at start: carol is
        # still staff after a restart.
        restart(env)
        wait_log(env.threshold, "staff room %s: 2 joined" % room)
        assert PONG in ask(env, "carol", room)
    finally:
        env.staff_rooms = []
        restart(env)


def test_a_room_not_named_in_the_config_makes_no_one_staff(env, threshold):
    """The control: the same steps in a room that is not a staff room."""
    ensure_user(env, "erin")

    async def make():
        async with Client.for_user(env, "erin") as e:
            room = await e.create_room("not a staff room")
            await e.invite(room, env.bot)
            return room
    room = run(make())
    wait_membership(env, "erin", room, env.bot, "leave")
    recs = audit_records(threshold, "contact_blocked", room=room)
    assert len(recs) == 1 and recs[0]["reason"] == "bot_invite_refused", recs
