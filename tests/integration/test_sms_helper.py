"""The service's automatic helper by SMS, with real parts: Kannel's bearerbox
and smsbox with its fake SMSC (fakesmsc as the person's phone), a real
Synapse, staff as a Matrix client.  The helper lives in the conversation,
not in a channel: once the person has agreed, "1" gets the answer back as a
text and "0" tells the staff room at once, as on the web page."""

import os

import pytest

import synapse as harness
from helpers import audit_records, staff_room_with_bot
from mx import Client, poll, run
from kannel import BEARERBOX, FAKESMSC
from test_sms import SECRET, SERVICE_NUMBER, Kannel, Phone, restart

PHONE = "447700900777"
ANSWER_1 = "We are open Monday to Friday, 9:00 to 17:00."

pytestmark = pytest.mark.skipif(not os.access(FAKESMSC, os.X_OK) or not os.access(BEARERBOX, os.X_OK),
                                reason="Kannel (kannel, kannel-extras) is not installed: "
                                       "bash scripts/install-deps.sh")


@pytest.fixture(scope="module")
def sms_helper(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Text FAQ staff")
    sms_port = harness.free_port()
    kannel = Kannel(os.path.join(env.workdir, "kannel-helper"), sms_port, SECRET)
    env.services = {"texts": {
        "display_name": "Text FAQ",
        "staff_room": staff_room,
        "greeting": "Hello from the text FAQ.",
        "notice_version": "1",
        "notice": {"en": "Text FAQ run by the test charity."},
        "sms_number": "+" + SERVICE_NUMBER,
        "helper": {"en": {"menu": "Reply 1 for our opening hours.",
                          "answers": [{"number": 1, "text": ANSWER_1}]}},
    }}
    env.sms = {"enabled": True, "driver": "kannel", "listen_address": "127.0.0.1",
               "listen_port": sms_port, "secret": SECRET,
               "kannel_sendsms_url": kannel.sendsms_url, "kannel_username": "threshold",
               "kannel_password": "sendsms-pass"}
    restart(env)
    phone = None
    try:  # a Kannel that fails to start leaves the shared config as it was
        kannel.start()
        phone = Phone(kannel.dir, kannel.smsc_port, PHONE, SERVICE_NUMBER)
        yield {"staff_room": staff_room, "phone": phone}
    finally:
        if phone is not None:
            phone.hang_up()
        kannel.stop()
        env.services = None
        env.sms = None
        restart(env)


def test_sms_helper_answers_and_hands_over(env, threshold, sms_helper):
    phone, staff_room = sms_helper["phone"], sms_helper["staff_room"]
    phone.send("hello")
    phone.wait_for("1 English")
    phone.send("1")
    phone.wait_for("Reply YES to agree")
    phone.send("YES")
    phone.wait_for("Hello from the text FAQ.")  # the greeting, from the feed
    guest = [r for r in audit_records(threshold, "consent_recorded")
             if r.get("details", {}).get("entry") == "sms"][-1]["subject"]

    # After agreeing, "1" is words for staff and the helper's answer comes back as a text.
    phone.send("1")
    got = phone.wait_for(ANSWER_1)
    assert "Reply 0 to talk to a person." in got
    phone.wait_for("Reply 1 for our opening hours.")  # the menu, once

    # "0": the staff room is told at once, naming the pseudonym and "by SMS", never the number.
    phone.send("0")
    phone.wait_for("We have asked a member of staff to join you.")

    async def told():
        async with Client.for_user(env, "staff") as s:
            async def hit():
                for ev in await s.history(staff_room):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and "asked to talk to a person" in body:
                        return body
                return None
            return await poll(hit, timeout=15, what="the staff room's hand-over notice")
    body = run(told())
    assert "(by SMS)" in body and PHONE not in body, body
    assert guest not in body  # a pseudonym, not the user id
    phone.hang_up()
