"""Safeguarding concerns and cases, worked by leads (real Synapse).

A guest's words matching the service's keyword list open a case and alert
the safeguarding room without the words; staff raise a concern with
`!threshold concern` (sealed, the message redacted, never on the guest's
page) or by reacting with the configured key; leads work the case with
`!case` (refused to other staff) and the CLI, every step on the record; a
case past its deadline is reminded; a guest left waiting is escalated to
the duty lead, and again while they keep waiting.
"""

import json
import re
import time

import pytest

from gateway import Guest, join_portal, wait_gateway
from helpers import (audit_records, bearer, ensure_user, q,  # noqa: F401 (safeguarding: a fixture)
                     safeguarding, staff_room_with_bot)
from mx import Client, poll, replies_to, run

KEYWORD = "hurt me"
DEADLINE_S = 4  # every severity's response time here: short, so reminders come
REMINDER_S = 3
ESCALATE_S = 3


@pytest.fixture(scope="module")
def service(env, safeguarding):
    """A service with a keyword list, a duty lead, short deadlines and
    escalation; the safeguarding room configured (helpers.safeguarding)."""
    ensure_user(env, "lead")
    staff_room = staff_room_with_bot(env, "Cases helpline staff")
    env.services = {"helpline": {
        "display_name": "Cases Helpline",
        "staff_room": staff_room,
        "public_entry": True,
        "public_per_hour": 1000,
        "duty_leads": [env.users["lead"][0]],
        "escalate_after_seconds": ESCALATE_S,
        "escalate_every_seconds": ESCALATE_S,
        "concern_keywords": {"en": [KEYWORD, "not safe"], "fr": ["me faire du mal"]},
    }}
    env.safeguarding_settings = {"response_seconds_low": DEADLINE_S,
                                 "response_seconds_medium": DEADLINE_S,
                                 "response_seconds_high": DEADLINE_S,
                                 "reminder_seconds": REMINDER_S}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"staff_room": staff_room, "safeguarding": safeguarding}
    env.services = None
    env.safeguarding_settings = {}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def guest_in_conversation(env, service):
    """A guest through the public entry, staff joined to its room: (guest, room, user id)."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    room = join_portal(env, service["staff_room"], g.pseudonym)
    out = env.threshold.run("guest", "show", g.pseudonym, "--json").stdout
    return g, room, json.loads(out)["user_id"]


def bot_messages(env, room, who="lead"):
    async def read():
        async with Client.for_user(env, who) as c:
            return [ev for ev in await c.history(room)
                    if ev.get("sender") == env.bot and ev.get("type") == "m.room.message"]
    return run(read())


def wait_bot_message(env, room, pred, timeout=30, what="a notice", who="lead"):
    async def read():
        async with Client.for_user(env, who) as c:
            async def got():
                for ev in await c.history(room):
                    if ev.get("sender") == env.bot and ev.get("type") == "m.room.message" \
                            and pred(ev["content"].get("body", "")):
                        return ev
                return None
            return await poll(got, timeout=timeout, what=what)
    return run(read())


def send_as(env, who, room, text):
    async def go():
        async with Client.for_user(env, who) as c:
            return await c.send_text(room, text)
    return run(go())


def ask(env, who, room, text, timeout=30):
    """Send text as @who and wait for the bot's reply to it: its body."""
    async def go():
        async with Client.for_user(env, who) as c:
            cmd = await c.send_text(room, text)

            async def reply():
                return replies_to(await c.history(room), env.bot).get(cmd)
            return (await poll(reply, timeout=timeout, what="the reply to %r" % text))[0]
    return run(go())["content"]["body"]


def event_of(env, who, room, event_id):
    r = __import__("requests").get("%s/_matrix/client/v3/rooms/%s/event/%s"
                                   % (env.hs_url, q(room), q(event_id)),
                                   headers=bearer(env.token(who)), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def case_of_alert(body):
    m = re.search(r"case #(\d+)", body)
    assert m, body
    return int(m.group(1))


def test_keyword_opens_a_case_without_copying_the_words(env, service):
    g, room, guest = guest_in_conversation(env, service)
    # Not a match: "hurt meal" is not the phrase "hurt me" (word boundaries).
    g.send("I hurt mealtimes, sorry, typo")
    g.send("my partner said he will HURT   me tonight, the door code is 4711")
    alert = wait_bot_message(env, service["safeguarding"],
                             lambda b: "about guest %s" % guest in b, what="the concern alert")
    body = alert["content"]["body"]
    assert "keyword list matched" in body and "Opened case #" in body, body
    assert "hurt" not in body.lower() and "4711" not in body, body
    recs = audit_records(env.threshold, "concern_raised", subject=guest)
    assert len(recs) == 1, recs  # the typo did not match
    rec = recs[0]
    assert rec["details"]["source"] == "keyword" and rec["reason"] == "concern_raised", rec
    assert rec["sealed"] is None and "hurt" not in json.dumps(rec).lower(), rec
    case = case_of_alert(body)
    listed = env.threshold.run("case", "list").stdout
    assert ("#%d medium open, guest %s" % (case, guest)) in listed, listed
    print("keyword alert sent %d ms after the concern was recorded"
          % (alert["origin_server_ts"] - rec["ts"]))


def test_staff_concern_is_sealed_redacted_and_hidden_from_the_guest(env, service):
    g, room, guest = guest_in_conversation(env, service)
    g.send("hello")
    cmd_text = "!threshold concern high bruises on both arms, says brother did it"
    reply = ask(env, "staff", room, cmd_text)
    assert reply.startswith("Concern recorded (high) in case #"), reply
    case = case_of_alert(reply)
    alert = wait_bot_message(env, service["safeguarding"],
                             lambda b: "case #%d" % case in b and "raised by staff" in b,
                             what="the concern alert")
    body = alert["content"]["body"]
    assert "bruises" not in body and "brother" not in body, body
    # A high concern mentions the service's duty lead.
    assert env.users["lead"][0] in alert["content"]["m.mentions"]["user_ids"], alert
    # The words are sealed in the record, and the message carrying them is redacted.
    rec = audit_records(env.threshold, "concern_raised", subject=guest)[-1]
    assert rec["sealed"] and "bruises" not in json.dumps(rec), rec
    cmd_event = rec["details"]["event_id"]

    def redacted():
        ev = event_of(env, "staff", room, cmd_event)
        return "body" not in ev.get("content", {})
    deadline = time.monotonic() + 30
    while not redacted():
        assert time.monotonic() < deadline, "the concern message was not redacted"
        time.sleep(0.3)
    # The guest's page never showed the command, nor the bot's answer to it.
    send_as(env, "staff", room, "Thanks for waiting, I am here.")
    g.wait_for(lambda e: e.get("body") == "Thanks for waiting, I am here.", what="staff's reply")
    shown = json.dumps(g.seen)
    assert "bruises" not in shown and "concern" not in shown.lower(), g.seen


def test_reaction_raises_a_medium_concern_on_that_message(env, service):
    g, room, guest = guest_in_conversation(env, service)
    g.send("there is something I cannot say here")

    async def react():
        async with Client.for_user(env, "staff") as s:
            async def theirs():
                for ev in await s.history(room):
                    if ev.get("sender") == guest and ev.get("type") == "m.room.message":
                        return ev["event_id"]
                return None
            target = await poll(theirs, timeout=30, what="the guest's message")
            await s.nio.room_send(room, "m.reaction", {"m.relates_to": {
                "rel_type": "m.annotation", "event_id": target, "key": "\u26a0\ufe0f"}})
            return target
    target = run(react())
    wait_bot_message(env, service["safeguarding"],
                     lambda b: "about guest %s" % guest in b and "reaction by staff" in b,
                     what="the reaction's concern alert")
    rec = audit_records(env.threshold, "concern_raised", subject=guest)[-1]
    assert rec["details"]["source"] == "reaction" and rec["details"]["severity"] == "medium", rec
    assert rec["details"]["event_id"] == target, rec


def test_lead_works_a_case_from_alert_to_closure(env, service):
    g, room, guest = guest_in_conversation(env, service)
    reply = ask(env, "staff", room, "!threshold concern medium she is scared to go home")
    case = case_of_alert(reply)
    # A second concern joins the same case and raises its severity.
    reply2 = ask(env, "staff", room, "!threshold concern high now says he has a knife")
    assert case_of_alert(reply2) == case and "opened now" not in reply2, reply2
    sg = service["safeguarding"]

    listed = ask(env, "lead", sg, "!case list")
    assert ("#%d high open, guest %s" % (case, guest)) in listed, listed
    shown = ask(env, "lead", sg, "!case show %d" % case)
    assert "scared to go home" in shown and "has a knife" in shown, shown
    assert ask(env, "lead", sg, "!case take %d" % case).startswith("Case #%d is now held by" % case)
    assert ask(env, "lead", sg, "!case note %d rang the guest back, safe tonight" % case) \
        .startswith("Note added to case #%d" % case)
    closed = ask(env, "lead", sg, "!case close %d referred to the local IDVA service" % case)
    assert closed.startswith("Case #%d is closed" % case), closed
    again = ask(env, "lead", sg, "!case note %d too late" % case)
    assert "is closed" in again, again
    # The bot cannot remove the lead's own message in a room the lead made: it says so.
    assert "Your message above still holds the words" in closed, closed
    assert not [ev for ev in bot_messages(env, sg)
                if "safe tonight" in json.dumps(ev) or "IDVA" in json.dumps(ev)]
    # The CLI reads the same case, unsealed, and that read is on the record too.
    out = env.threshold.run("case", "show", str(case)).stdout
    assert "safe tonight" in out and "Outcome: referred to the local IDVA service" in out, out
    assert "closed" in out.splitlines()[0], out

    viewed = audit_records(env.threshold, "case_viewed", subject=guest)
    assert [r["details"]["action"] for r in viewed] == ["show", "show"], viewed
    assert viewed[0]["actor"] == env.users["lead"][0] and viewed[1]["actor"].startswith("cli:"), viewed
    changed = audit_records(env.threshold, "case_changed", subject=guest)
    actions = [r["details"]["action"] for r in changed if r["details"]["case"] == case]
    assert [a for a in actions if a != "reminded"] == ["take", "note", "close"], changed
    note = [r for r in changed if r["details"]["action"] == "note"][0]
    assert note["sealed"] and "safe tonight" not in json.dumps(note), note

    # One case, exported for a review: its guest's records since it opened.
    r = env.threshold.run("audit", "export", "--case", str(case))
    lines = [json.loads(ln) for ln in r.stdout.splitlines()[1:]]
    kinds = [ln.get("kind") for ln in lines if not ln.get("omitted") and "kind" in ln]
    assert kinds.count("concern_raised") == 2 and "case_changed" in kinds, kinds
    assert all(ln.get("subject") in (guest, None) for ln in lines if "kind" in ln), lines


def test_case_commands_are_refused_to_staff_who_are_not_leads(env, service):
    sg = service["safeguarding"]

    async def invite_staff():
        async with Client.for_user(env, "lead") as lead:
            await lead.invite(sg, env.users["staff"][0])
        r = __import__("requests").post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(sg)),
                                        headers=bearer(env.token("staff")), json={}, timeout=30)
        assert r.status_code == 200, r.text
    run(invite_staff())
    before = len(audit_records(env.threshold, "case_viewed"))
    reply = ask(env, "staff", sg, "!case list", )
    assert reply == "Sorry, cases are worked only by safeguarding leads, in the safeguarding room.", reply
    reply = ask(env, "staff", sg, "!case show 1")
    assert "only by safeguarding leads" in reply and "Case #1" not in reply, reply
    assert len(audit_records(env.threshold, "case_viewed")) == before


def test_a_case_past_its_deadline_is_reminded(env, service):
    g, room, guest = guest_in_conversation(env, service)
    reply = ask(env, "staff", room, "!threshold concern low keeps mentioning money troubles")
    case = case_of_alert(reply)
    rec = audit_records(env.threshold, "concern_raised", subject=guest)[-1]
    first = wait_bot_message(env, service["safeguarding"],
                             lambda b: b.startswith("Reminder: case #%d " % case),
                             timeout=DEADLINE_S + 30, what="the overdue reminder")
    late = first["origin_server_ts"] - (rec["ts"] + DEADLINE_S * 1000)
    print("reminder %d ms after the deadline" % late)
    assert late >= 0, late  # never before the deadline
    assert "Holder: nobody yet" in first["content"]["body"]
    reminders = audit_records(env.threshold, "case_changed", subject=guest)
    assert any(r["details"]["action"] == "reminded" and r["details"]["case"] == case for r in reminders)


def test_a_waiting_conversation_escalates_and_again(env, service):
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    out = env.threshold.run("guest", "show", g.pseudonym, "--json").stdout
    guest = json.loads(out)["user_id"]
    g.send("is anyone there?")
    sg = service["safeguarding"]
    first = wait_bot_message(env, sg, lambda b: "guest %s)" % guest in b and "waiting" in b,
                             timeout=ESCALATE_S + 30, what="the escalation")
    assert env.users["lead"][0] in first["content"]["m.mentions"]["user_ids"], first
    assert first["content"]["body"].startswith(env.users["lead"][0]), first
    second = wait_bot_message(env, sg, lambda b: "guest %s)" % guest in b and "reminder" in b,
                              timeout=ESCALATE_S + 30, what="the second escalation")
    gap = second["origin_server_ts"] - first["origin_server_ts"]
    print("escalations %d ms apart at the homeserver (interval %d s)" % (gap, ESCALATE_S))
    recs = audit_records(env.threshold, "conversation_escalated", subject=guest)
    assert [r["details"]["count"] for r in recs][:2] == [1, 2], recs
    # Measured on Threshold's own clock (waiting_ms): never early.
    assert recs[0]["details"]["waiting_ms"] >= ESCALATE_S * 1000, recs
    assert recs[1]["details"]["waiting_ms"] - recs[0]["details"]["waiting_ms"] >= ESCALATE_S * 1000, recs
    # Once the guest has left, nobody is waiting: no more escalations.
    assert g.post("/leave", {}).status_code == 200
    left = len(audit_records(env.threshold, "conversation_escalated", subject=guest))
    time.sleep(ESCALATE_S * 2 + 1)
    assert len(audit_records(env.threshold, "conversation_escalated", subject=guest)) <= left + 1


def test_help_button_alerts_staff_and_the_duty_lead_at_once(env, service):
    g, room, guest = guest_in_conversation(env, service)
    sent_ms = int(time.time() * 1000)
    r = g.post("/help", {})
    assert r.status_code == 200, r.text
    assert r.json()["received"] is True and r.json()["repeat"] is False, r.json()
    lead = env.users["lead"][0]
    alert = wait_bot_message(env, service["safeguarding"],
                             lambda b: "asked for help now" in b and guest in b, what="the help alert")
    assert alert["content"]["body"].startswith(lead), alert  # the duty lead, named first
    notice = wait_bot_message(env, room, lambda b: "I need help now" in b, who="staff",
                              what="the notice to the conversation's staff")
    lag_sg = alert["origin_server_ts"] - sent_ms
    lag_room = notice["origin_server_ts"] - sent_ms
    print("help: safeguarding room alert %d ms, conversation notice %d ms after the request"
          % (lag_sg, lag_room))
    # Measured by the homeserver's own timestamps, not by how long the test waited.
    assert lag_sg <= 1000 and lag_room <= 1000, (lag_sg, lag_room)
    recs = audit_records(env.threshold, "report_received", subject=guest)
    assert len(recs) == 1 and recs[0]["reason"] == "guest_help_allowed", recs
    assert recs[0]["details"] == {"channel": "web", "conversation": "open"}, recs
    # A second tap within the minute is confirmed the same way, and alerts nobody again.
    r = g.post("/help", {})
    assert r.status_code == 200 and r.json() == {"received": True, "repeat": True}, r.text
    assert len(audit_records(env.threshold, "report_received", subject=guest)) == 1
    # Nothing of it reaches the guest's own feed.
    send_as(env, "staff", room, "I am here, you are safe to write.")
    g.wait_for(lambda e: e.get("body") == "I am here, you are safe to write.", what="staff's answer")
    assert "need help now" not in json.dumps(g.seen).lower() and "URGENT" not in json.dumps(g.seen), g.seen


SIGNPOST = "If you are in danger now call 999. Night line: 0800 000 111 (free)."


@pytest.fixture(scope="module")
def closed_service(env, service):
    """A second service whose hours exclude this hour, every day."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now.hour + 3) % 24
    hours = "%02d:00-%02d:00" % (start, start + 1)
    staff_room = staff_room_with_bot(env, "Night staff")
    env.services["nightline"] = {
        "display_name": "Night Line", "staff_room": staff_room, "public_entry": True,
        "public_per_hour": 1000, "utc_offset": "+00:00",
        "hours": {d: hours for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "signposting": {"en": SIGNPOST, "fr": "En danger ? Appelez le 112."},
    }
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    opens = now.replace(hour=start, minute=0, second=0, microsecond=0)
    if opens <= now:
        opens += datetime.timedelta(days=1)
    yield int(opens.timestamp() * 1000)
    del env.services["nightline"]
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)


def test_outside_opening_hours_the_page_is_told_before_the_guest_writes(env, closed_service):
    g = Guest(env.gw_url)
    r = g.post("/invitation", {"service": "nightline"}, auth=False)
    assert r.status_code == 200, r.text
    hours = r.json()["hours"]
    assert hours["open"] is False and hours["opens_ms"] == closed_service, hours
    assert hours["signposting"]["en"] == SIGNPOST, hours
    g.redeem(service="nightline")
    r = g.get("/session")
    assert r.status_code == 200 and r.json()["hours"]["open"] is False, r.text
    assert r.json()["hours"]["opens_ms"] == closed_service
    # An open service says so, with no closing words.
    r = g.post("/invitation", {"service": "helpline"}, auth=False)
    assert r.json()["hours"] == {"open": True, "signposting": {}}, r.json()
