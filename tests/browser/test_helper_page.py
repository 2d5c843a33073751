"""A service's automatic helper (services.<name>.helper) on the guest page in
a real browser, against the real gateway and Synapse: the helper answers a
message after that message has reached the conversation room, so the answer
shows below the guest's own words, live and after a reload alike; "0" tells
the guest a person was asked."""

import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from conftest import NOTICE, PAGE_TITLE, Gateway, _Elsewhere
from gateway import wait_gateway
from helpers import staff_room_with_bot
from test_guest_page import no_problems, send, to_chat

ANSWER_1 = "We are open Monday to Friday, 9:00 to 17:00."
ASKED = "We have asked a member of staff to join you."
HELPER = {"en": {"menu": "While you wait, reply with a number:\n1 Opening hours",
                 "answers": [{"number": 1, "keywords": ["opening hours"], "text": ANSWER_1}]}}

# The text of each entry of the chat, top to bottom: "self:<words>" for the
# guest's own messages, "note:<words>" for the service's (the helper's too).
ENTRIES = ("[...document.querySelectorAll('#c-msgs .msg')].map(m =>"
           " (m.classList.contains('self') ? 'self:' : m.classList.contains('note') ? 'note:' : 'other:')"
           " + m.querySelector('.body').textContent)")


@pytest.fixture(scope="module")
def helpgw(env, node_ready):
    """The browser tests' "helpline" service with a helper and no opening
    hours (always open), nobody from staff joined; put back afterwards."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    elsewhere_url = "http://127.0.0.1:%d" % elsewhere.server_address[1]
    staff_room = staff_room_with_bot(env, "Helpline staff (helper browser test)")
    env.services = {"helpline": {
        "display_name": "Test Helpline", "staff_room": staff_room,
        "greeting": "Hello, you are through to the test helpline.",
        "notice_version": "1", "notice": NOTICE, "public_entry": True, "public_per_hour": 1000,
        "helper": HELPER,
    }}
    env.gateway_settings = {"page_title": PAGE_TITLE, "exit_url": elsewhere_url + "/elsewhere"}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    try:
        yield Gateway(env, env.threshold, staff_room, elsewhere_url)
    finally:
        elsewhere.shutdown()
        env.services = None
        env.gateway_settings = {}
        env.write_config()
        env.threshold.stop()
        env.threshold.start()


def entries(b):
    return b.eval(ENTRIES)


def after(seq, first, then):
    """Whether `then` is in seq after `first` (both present)."""
    assert first in seq, (first, seq)
    assert then in seq, (then, seq)
    return seq.index(then) > seq.index(first)


def test_helper_answers_below_the_question(helpgw, browser):
    """At 320x640: "1" gets the helper's answer below the guest's "1"; after
    a reload the feed reads in the same order; "0" shows that a person was
    asked, below the "0"."""
    b = browser(width=320, height=640)
    to_chat(b, helpgw, "en", prefix=None)
    send(b, "1")
    b.wait_js("[...document.querySelectorAll('.msg.note .body')]"
              ".some(e => e.textContent.startsWith(%s))" % json.dumps(ANSWER_1), timeout=60000)
    answer = "note:%s\n\nReply 0 to talk to a person." % ANSWER_1
    live = entries(b)
    assert after(live, "self:1", answer), live

    # A reload reads the feed from the gateway: the stored order.
    b.call("reload")
    b.wait("#s-chat h1")
    b.wait_js("[...document.querySelectorAll('.msg.note .body')]"
              ".some(e => e.textContent.startsWith(%s))" % json.dumps(ANSWER_1), timeout=60000)
    b.wait_js("[...document.querySelectorAll('.msg.self .body')].some(e => e.textContent === '1')",
              timeout=60000)
    stored = entries(b)
    assert after(stored, "self:1", answer), stored
    assert stored.count(answer) == 1, stored

    send(b, "0")
    b.wait_js("[...document.querySelectorAll('.msg.note .body')]"
              ".some(e => e.textContent.startsWith(%s))" % json.dumps(ASKED), timeout=60000)
    now = entries(b)
    asked = next(e for e in now if e.startswith("note:" + ASKED))
    assert after(now, "self:0", asked), now
    assert b.eval("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scrolling"
    no_problems(b)
