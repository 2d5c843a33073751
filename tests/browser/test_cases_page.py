"""The guest page's safeguarding parts in a real browser: outside opening
hours the closed notice (with when someone will read) and the service's crisis
signposting come before the notice text and before the composer; "I need help
now" is one tap and is confirmed quietly on the page, and staff are told."""

import datetime
import json

import pytest
import requests

from gateway import wait_gateway
from helpers import bearer, q, staff_room_with_bot
from mx import Client, poll, run

SIGNPOST = "If you are in danger now, call 999. Night line: 0800 000 111 (free)."


@pytest.fixture(scope="module")
def night(env, node_ready):
    """A public service whose hours exclude this hour, every day."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now.hour + 3) % 24
    hours = "%02d:00-%02d:00" % (start, start + 1)
    staff_room = staff_room_with_bot(env, "Night line staff (browser tests)")
    env.services = {"nightline": {
        "display_name": "Night Line", "staff_room": staff_room, "public_entry": True,
        "public_per_hour": 1000, "utc_offset": "+00:00",
        "hours": {d: hours for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "signposting": {"en": SIGNPOST},
    }}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield staff_room
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def before(b, first, second):
    """Whether element @first comes before @second in the page."""
    return b.eval("!!(document.querySelector(%s).compareDocumentPosition(document.querySelector(%s))"
                  " & Node.DOCUMENT_POSITION_FOLLOWING)" % (json.dumps(first), json.dumps(second)))


def test_closed_notice_and_signposting_come_before_the_composer(env, night, browser):
    b = browser()
    b.goto(env.gw_url + "/#service=nightline")
    b.wait_js("!location.hash")
    b.wait("#s-lang h1")
    b.click("#lang-list button[lang=en]")
    b.wait("#s-notice .hours-box")
    box = b.text("#s-notice .hours-box")
    assert "We are closed just now" in box and "someone will read it from" in box, box
    assert SIGNPOST in box, box
    assert before(b, "#s-notice .hours-box", "#n-text") and before(b, "#s-notice .hours-box", "#n-agree")
    b.click("#n-agree")
    b.click("#w-go")
    b.wait("#s-chat .hours-box")
    box = b.text("#s-chat .hours-box")
    assert SIGNPOST in box and "We are closed just now" in box, box
    assert before(b, "#s-chat .hours-box", "#c-form"), "the closed notice is not before the composer"
    assert b.eval("getComputedStyle(document.querySelector('#s-chat .hours-box')).display") != "none"

    # "I need help now": first in the Options sheet, a quiet confirmation,
    # and staff are told.
    b.click("#c-menu-open")
    b.click("#c-menu-more .c-help")
    b.wait_js("!document.querySelector('.c-help-done').hidden")
    assert "have been told" in b.text(".c-help-done")

    async def told():
        async with Client.for_user(env, "staff") as s:
            async def notice():
                for ev in reversed(await s.history(night)):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and " is waiting" in body:
                        return body
            body = await poll(notice, timeout=30, what="the waiting notice")
            return body.rsplit("/#/", 1)[1].strip()
    room = run(told())
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text

    async def urgent():
        async with Client.for_user(env, "staff") as s:
            async def find():
                # in the conversation, or in the staff room when the guest
                # asked before their conversation's room was made
                for where in (room, night):
                    for ev in await s.history(where):
                        if "I need help now" in ev.get("content", {}).get("body", ""):
                            return ev
            return await poll(find, timeout=30, what="the urgent notice in the conversation")
    assert run(urgent())["sender"] == env.bot
