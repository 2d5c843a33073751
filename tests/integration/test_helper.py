"""A service's automatic helper (services.<name>.helper, policy/helper.c)
end to end: a guest on the web page, staff in Matrix, a real Synapse.
While nobody from staff has joined, "1" gets the answer in the guest's feed
and staff see the bot's notice of it in the conversation room; "0" or
"person" tells the staff room at once; once staff joined (open) the helper
is silent; out of hours it answers even with staff joined.
docs/configuration.md ("The helper") describes what is checked here."""
import time

import pytest

from gateway import Guest, join_portal, wait_gateway
from helpers import staff_room_with_bot
from mx import Client, poll, run

ANSWER_1 = "We are open Monday to Friday, 9:00 to 17:00."
MENU = "While you wait, reply with a number:\n1 Opening hours\n2 Where we are"
HELPER = {
    "en": {"menu": MENU,
           "answers": [{"number": 1, "keywords": ["opening hours"], "text": ANSWER_1},
                       {"number": 2, "keywords": ["address"], "text": "12 High Street."}]},
    "fr": {"menu": "1 Nos horaires",
           "answers": [{"number": 1, "text": "Ouvert du lundi au vendredi."}]},
}


@pytest.fixture(scope="module")
def helper_services(env):
    """Two services with the same helper: "faq" always open (no hours) and
    "faq-night" always closed; the daemon restarted with them, put back after."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    day, night = staff_room_with_bot(env, "FAQ staff"), staff_room_with_bot(env, "FAQ night staff")
    common = {"notice_version": "1", "public_entry": True, "public_per_hour": 1000,
              "greeting": "Hello from the service.", "helper": HELPER}
    env.services = {
        "faq": dict(common, display_name="FAQ Desk", staff_room=day),
        "faq-night": dict(common, display_name="FAQ Night", staff_room=night,
                          hours={"mon": "closed"}),
    }
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"day": day, "night": night}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def service_words(guest):
    return [e["body"] for e in guest.seen
            if e["kind"] == "notice" and e.get("from", {}).get("role") == "service"]


def bot_notices(env, room):
    async def read():
        async with Client.for_user(env, "staff") as s:
            return [ev["content"]["body"] for ev in await s.history(room)
                    if ev.get("sender") == env.bot and ev.get("type") == "m.room.message"
                    and ev["content"].get("msgtype") == "m.notice"]
    return run(read())


def staff_room_notice(env, room, needle, timeout):
    async def find():
        async with Client.for_user(env, "staff") as s:
            async def hit():
                for ev in await s.history(room):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and needle in body:
                        return body
                return None
            return await poll(hit, timeout=timeout, interval=0.2, what="the staff room's notice")
    return run(find())


def started(env, service, language="en"):
    guest = Guest(env.gw_url)
    guest.redeem(service=service, language=language)
    guest.wait_for(lambda e: e["kind"] == "notice", what="the greeting")
    return guest


def test_helper_answers_then_staff_take_over(env, threshold, helper_services):
    guest = started(env, "faq")
    guest.send("1")
    ans = guest.wait_for(lambda e: e.get("body", "").startswith(ANSWER_1), what="the helper's answer")
    assert ans["kind"] == "notice" and ans["from"] == {"role": "service", "name": "FAQ Desk"}, ans
    assert "Reply 0 to talk to a person." in ans["body"]
    # the first words also got the menu, once, after the answer
    guest.wait_for(lambda e: e.get("body", "").startswith(MENU), what="the menu")
    guest.send("2")
    guest.wait_for(lambda e: e.get("body", "").startswith("12 High Street."), what="answer 2")
    guest.poll(timeout_ms=500)
    assert sum(1 for b in service_words(guest) if b.startswith(MENU)) == 1, service_words(guest)
    # the guest's own words before each answer, in the feed's order
    mine = [e["body"] for e in guest.seen if e.get("from", {}).get("role") == "self"]
    assert mine == ["1", "2"], guest.seen

    # Staff join from the waiting notice: the room holds the guest's words
    # and, as the bot's notices, what the helper told them.
    portal = join_portal(env, helper_services["day"], guest.pseudonym, expect_service="FAQ Desk")
    notices = bot_notices(env, portal)
    assert any(n.startswith("The helper answered 1:\n> " + ANSWER_1) for n in notices), notices
    assert any(n.startswith("The helper showed its menu:") for n in notices), notices
    guest.wait_for(lambda e: "has joined the conversation" in e.get("body", ""), what="staff joined")

    # Staff are here and the service is open: "1" reaches staff, the helper says nothing.
    before = len(service_words(guest))
    local = guest.send("1")
    guest.wait_for(lambda e: e.get("local_id") == local, what="the guest's own echo")
    time.sleep(1.5)
    guest.poll(timeout_ms=500)
    assert len(service_words(guest)) == before, service_words(guest)[before:]
    assert sum(1 for n in bot_notices(env, portal) if n.startswith("The helper answered 1:")) == 1


def test_person_tells_staff_room_at_once(env, threshold, helper_services):
    for words in ("0", "Can I talk to a person?"):
        guest = started(env, "faq")
        t0 = time.monotonic()
        guest.send(words)
        body = staff_room_notice(env, helper_services["day"],
                                 guest.pseudonym + " asked to talk to a person", timeout=10)
        took = time.monotonic() - t0
        assert "https://matrix.to/#/!" in body and "URGENT" not in body, body
        assert took < 5, took
        told = guest.wait_for(lambda e: "asked a member of staff" in e.get("body", ""),
                              what="the guest told a person was asked")
        assert told["from"]["role"] == "service"
        print("helper: %r -> staff room notice in %.2f s" % (words, took))


def test_out_of_hours_answers_with_staff_joined(env, threshold, helper_services):
    guest = started(env, "faq-night")
    portal = join_portal(env, helper_services["night"], guest.pseudonym, expect_service="FAQ Night")
    guest.wait_for(lambda e: "has joined the conversation" in e.get("body", ""), what="staff joined")
    guest.send("opening hours?")
    guest.wait_for(lambda e: e.get("body", "").startswith(ANSWER_1), what="the out-of-hours answer")
    guest.send("0")
    guest.wait_for(lambda e: e.get("body", "").startswith("We are closed now."),
                   what="the closed hand-over words")
    staff_room_notice(env, helper_services["night"], guest.pseudonym + " asked to talk to a person",
                      timeout=10)
    assert any(n.startswith("The helper answered 1:") for n in bot_notices(env, portal))


def test_helper_speaks_the_guests_language(env, threshold, helper_services):
    guest = started(env, "faq", language="fr")
    guest.send("1")
    ans = guest.wait_for(lambda e: e.get("body", "").startswith("Ouvert du lundi"), what="the French answer")
    assert "R\u00e9pondez 0 pour parler \u00e0 une personne." in ans["body"]
