"""Guests on different channels, with real parts: a web guest through the
gateway (as the page uses it) and an SMS guest through Kannel's bearerbox and
smsbox with its fake SMSC (fakesmsc as the phone), of the same service; a real
Synapse; staff as a matrix-nio client.

Each in their own conversation, neither reaches the other: not staff's
replies, not their own words, not by any way their channel offers.  Put into
one support group by staff (`!threshold group add`), both hear the group and
are heard in it under their pseudonyms: the web guest's words reach the phone
as "# <pseudonym>: ...", the phone's "# ..." reach the group and the web
page.  Removed from the group, the phone hears no more of it; STOP (even
"#STOP") ends the conversation and takes the phone out of the group.  The phone
number is nowhere in Synapse's database, Threshold's log, the rooms' state or
the web guest's feed.

A WhatsApp guest of the same service comes through a local stand-in for
Meta's Cloud API (fakemeta.py: webhooks signed as Meta signs them, the Graph
API's /messages as the phone): apart, nothing of the others reaches it and
nothing of its reaches them; in the group it hears "# <name>: ..." by the
Graph API and its "# ..." reach the group, the page and the phone under its
pseudonym; removed, it hears no more of the group.  Each guest is an object
with the same small interface (write, got, wait_got, never_got, pseudonym).
"""

import glob
import json
import os
import re
import sqlite3
import time
import urllib.parse

import pytest
import requests

import synapse as harness
from conftest import SERVER_NAME
from gateway import Guest, join_portal, wait_gateway
from helpers import bearer, bot_reply, q, staff_room_with_bot, staff_says, wait_membership
from mx import Client, poll, run
from fakemeta import FakeMeta, message, signature
from kannel import PASSWORD, USERNAME, Kannel, Phone
from kannel import installed as kannel_installed
from test_sms import SERVICE_NUMBER, waiting_by_sms
from test_whatsapp import secret_file

PHONE = "447700900517"  # the SMS guest's number: must appear nowhere in clear
SECRET = "kannel-mixed-secret-0123456789"
NOTICE = "Helpline of the test charity, by text or on the web. Messages are kept 30 days."
GREETING = "Hello, you are through to the mixed helpline."
WA_NUMBER = "447700900634"  # the WhatsApp guest's number (its wa_id): must appear nowhere in clear
PNID = "106540352249876"
APP_SECRET = "mixed-app-secret-5b4a3c2d"
ACCESS_TOKEN = "EAAG-mixed-access-token"

pytestmark = pytest.mark.skipif(not kannel_installed(),
                                reason="Kannel (kannel, kannel-extras) is not installed: "
                                       "bash scripts/install-deps.sh")


class Line(Phone):
    """The fake SMSC delivers to whichever fakesmsc is connected: one
    connection at a time for every number, what it got sorted by number."""

    def text(self, number, words):
        self.number = number
        self.send(words)

    def got(self, number):
        self.number = number
        return self.received()


class SmsGuest:
    """A person on their phone."""

    channel = "sms"

    def __init__(self, line, number):
        self.line, self.number = line, number
        self.pseudonym = self.user_id = self.room = None

    def write(self, words):
        self.line.text(self.number, words)

    def got(self):
        return self.line.got(self.number)

    def wait_got(self, words, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = self.got()
            for t in texts:
                if words in t:
                    return t
            time.sleep(0.2)
        raise AssertionError("the phone never got %r; it got %r" % (words, self.got()))

    def never_got(self, words):
        return not [t for t in self.got() if words in t]


class WaGuest:
    """A person on WhatsApp: what they write is a webhook signed as Meta
    signs it; what they get is what reached the fake Graph API's /messages."""

    channel = "whatsapp"

    def __init__(self, hook, meta, number):
        self.hook, self.meta, self.number, self.n = hook, meta, number, 0
        self.pseudonym = self.user_id = self.room = None

    def write(self, words, pnid=PNID):
        self.n += 1
        body = message(pnid, self.number, "wamid.mixed.%d" % self.n, text=words)
        r = requests.post(self.hook, data=body, timeout=30,
                          headers={"Content-Type": "application/json",
                                   "X-Hub-Signature-256": signature(APP_SECRET, body)})
        assert r.status_code == 200 and r.text == "", (r.status_code, r.text)

    def got(self):
        return self.meta.texts_to(self.number)

    def wait_got(self, words, timeout=30):
        self.meta.wait_text(self.number, words, timeout=timeout)
        return [t for t in self.got() if words in t][0]

    def never_got(self, words):
        return not [t for t in self.got() if words in t]


class WebGuest:
    """A person on the web page."""

    channel = "web"

    def __init__(self, env):
        self.g = Guest(env.gw_url)
        self.pseudonym = self.user_id = self.room = None

    def write(self, words):
        return self.g.send(words)

    def wait_got(self, words, timeout=30):
        return self.g.wait_for(lambda e: words in (e.get("body") or ""), timeout=timeout, what=repr(words))

    def feed(self):
        self.g.poll(timeout_ms=0)
        return self.g.seen

    def never_got(self, words):
        return not [e for e in self.feed() if words in (e.get("body") or "")]


def history(env, room):
    async def read():
        async with Client.for_user(env, "staff") as s:
            return await s.history(room)
    return run(read())


def wait_in_room(env, room, sender, body, timeout=30):
    """The message @sender wrote in @room with exactly @body."""
    async def read():
        async with Client.for_user(env, "staff") as s:
            async def seen():
                return [e for e in await s.history(room) if e.get("sender") == sender
                        and e.get("content", {}).get("body") == body] or None
            return await poll(seen, timeout=timeout, what="%r in %s" % (body, room))
    return run(read())


def bodies(env, room):
    return [e.get("content", {}).get("body", "") for e in history(env, room)]


def restart(env):
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


@pytest.fixture(scope="module")
def mixed(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Mixed helpline staff")
    sms_port = harness.free_port()
    kannel = Kannel(os.path.join(env.workdir, "kannel-mixed"), sms_port, SECRET)
    meta = FakeMeta(ACCESS_TOKEN, phone_number_ids=[PNID])
    wa_port = harness.free_port()
    d = os.path.join(env.workdir, "whatsapp-mixed")
    os.makedirs(d, exist_ok=True)
    env.whatsapp = {"enabled": True, "listen_address": "127.0.0.1", "listen_port": wa_port,
                    "app_secret_file": secret_file(d, "app-secret", APP_SECRET),
                    "verify_token_file": secret_file(d, "verify-token", "mixed-verify-token"),
                    "access_token_file": secret_file(d, "access-token", ACCESS_TOKEN),
                    "graph_url": meta.url, "api_version": "v21.0",
                    "template_name": "conversation_waiting", "template_language": "en",
                    "per_number_per_minute": 30}
    env.services = {"mixed": {
        "display_name": "Mixed Helpline",
        "staff_room": staff_room,
        "greeting": GREETING,
        "notice_version": "1",
        "notice": {"en": NOTICE, "fr": "Ligne d'aide de l'association de test."},
        "public_entry": True,
        "sms_number": "+" + SERVICE_NUMBER,
        "whatsapp_phone_number_id": PNID,
    }}
    env.sms = {"enabled": True, "driver": "kannel", "listen_address": "127.0.0.1",
               "listen_port": sms_port, "secret": SECRET,
               "kannel_sendsms_url": kannel.sendsms_url, "kannel_username": USERNAME,
               "kannel_password": PASSWORD}
    env.gateway_settings = {"languages": ["en", "fr"]}
    restart(env)
    wait_gateway(env)
    line = None
    try:  # a Kannel that fails to start leaves the shared config as it was
        kannel.start()
        line = Line(kannel.dir, kannel.smsc_port, PHONE, SERVICE_NUMBER)
        yield {"staff_room": staff_room, "line": line, "kannel": kannel, "meta": meta,
               "hook": "http://127.0.0.1:%d/whatsapp" % wa_port}
    finally:
        if line is not None:
            line.hang_up()
        kannel.stop()
        meta.stop()
        env.services = None
        env.sms = None
        env.whatsapp = None
        env.gateway_settings = {}
        restart(env)


def web_guest_in_conversation(env, staff_room):
    w = WebGuest(env)
    w.g.redeem(service="mixed")
    w.pseudonym = w.g.pseudonym
    w.room = join_portal(env, staff_room, w.pseudonym, expect_service="Mixed Helpline")
    out = env.threshold.run("guest", "show", w.pseudonym, "--json").stdout
    w.user_id = json.loads(out)["user_id"]
    w.wait_got(GREETING)
    return w


def sms_guest_in_conversation(env, staff_room, line, number):
    s = SmsGuest(line, number)
    s.write("hello, is anyone there")
    s.wait_got("1 English / 2 Fran")
    s.write("1")
    s.wait_got("Reply YES to agree")
    s.write("YES")
    s.wait_got("Your messages now reach the team")
    body, s.room = waiting_by_sms(env, staff_room)
    s.pseudonym = body.split(" (by SMS) is waiting", 1)[0]
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(s.room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    s.wait_got(GREETING)
    members = run(_members(env, s.room))
    guests = [m for m in members if m not in (env.bot, env.users["staff"][0])]
    assert len(guests) == 1, members
    s.user_id = guests[0]
    return s


def waiting_by_whatsapp(env, staff_room, timeout=30):
    """The conversation room of the "<pseudonym> (by WhatsApp) is waiting" notice."""
    async def find():
        async with Client.for_user(env, "staff") as s:
            async def notice():
                for ev in reversed(await s.history(staff_room)):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and "(by WhatsApp) is waiting" in body:
                        return body
                return None
            return await poll(notice, timeout=timeout, what="the staff room's WhatsApp waiting notice")
    body = run(find())
    return body, body.rsplit("/#/", 1)[1].strip()


def wa_guest_in_conversation(env, staff_room, hook, meta, number):
    w = WaGuest(hook, meta, number)
    w.write("hello, is anyone there")
    w.wait_got("1 English / 2 Fran")
    w.write("1")
    w.wait_got("Reply YES to agree")
    w.write("YES")
    w.wait_got("Your messages now reach the team")
    body, w.room = waiting_by_whatsapp(env, staff_room)
    assert number not in body, body
    w.pseudonym = body.split(" (by WhatsApp) is waiting", 1)[0]
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(w.room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    w.wait_got(GREETING)
    members = run(_members(env, w.room))
    guests = [m for m in members if m not in (env.bot, env.users["staff"][0])]
    assert len(guests) == 1, members
    w.user_id = guests[0]
    return w


async def _members(env, room):
    async with Client.for_user(env, "staff") as c:
        return await c.joined_members(room)


def make_service_group(env, staff_room):
    cmd = staff_says(env, staff_room, "!threshold group create Tuesday mixed group")
    reply = bot_reply(env, "staff", staff_room, cmd)["content"]["body"]
    m = re.search(r"(![A-Za-z0-9]+:%s)" % re.escape(SERVER_NAME), reply)
    assert m, reply
    group = m.group(1)
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(group)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return group


def test_web_and_sms_guests_apart_then_in_one_group(env, threshold, mixed):
    staff_room, line = mixed["staff_room"], mixed["line"]
    web = web_guest_in_conversation(env, staff_room)
    sms = sms_guest_in_conversation(env, staff_room, line, PHONE)
    wa = wa_guest_in_conversation(env, staff_room, mixed["hook"], mixed["meta"], WA_NUMBER)
    guests = [web, sms, wa]
    assert len({g.room for g in guests}) == 3 and len({g.pseudonym for g in guests}) == 3

    # ---- 1. apart: each in their own conversation -------------------------------------------
    web.write("web words for staff only")
    wait_in_room(env, web.room, web.user_id, "web words for staff only")
    sms.write("phone words for staff only")
    wait_in_room(env, sms.room, sms.user_id, "phone words for staff only")
    wa.write("whatsapp words for staff only")
    wait_in_room(env, wa.room, wa.user_id, "whatsapp words for staff only")
    staff_says(env, web.room, "staff reply to the web guest")
    staff_says(env, sms.room, "staff reply to the phone")
    staff_says(env, wa.room, "staff reply to whatsapp")
    web.wait_got("staff reply to the web guest")
    sms.wait_got("staff reply to the phone")
    assert wa.wait_got("staff reply to whatsapp").endswith(": staff reply to whatsapp")

    # Neither can address the other in any way the channel offers.  The page
    # has no recipient: whatever else a request names, the words go to the
    # sender's own conversation (or are refused).
    r = web.g.post("/send", {"local_id": "addr1", "body": "to %s directly" % sms.pseudonym,
                             "room": sms.room, "to": sms.user_id})
    assert r.status_code in (202, 400), r.text
    web.write("@%s are you there?" % sms.pseudonym)
    # '#' names the group; in none, the words stay with staff, as written
    web.write("#anyone else here?")
    wait_in_room(env, web.room, web.user_id, "#anyone else here?")
    # a text naming the web guest, or to another number, reaches no one else
    sms.write("%s: hello from the phone" % web.pseudonym)
    sms.write("#anyone in a group?")
    wait_in_room(env, sms.room, sms.user_id, "#anyone in a group?")
    q_other = {"from": PHONE, "to": "4477000000", "text": "to another number", "id": "mx-other"}
    r = requests.get("http://127.0.0.1:%d/sms/kannel/%s" % (env.sms["listen_port"], SECRET),
                     params=q_other, timeout=10)
    assert r.status_code == 200 and not r.text, r.text
    # WhatsApp: naming another guest, '#' in no group, or to another business number
    wa.write("%s and %s: hello from whatsapp" % (web.pseudonym, sms.pseudonym))
    wa.write("to another business number", pnid="106540352240000")
    wa.write("#anyone on whatsapp in a group?")
    wait_in_room(env, wa.room, wa.user_id, "#anyone on whatsapp in a group?")
    time.sleep(3)  # what would leak has had time to
    wa_words = ("staff reply to whatsapp", "whatsapp words", "hello from whatsapp", "anyone on whatsapp",
                "another business number")
    for words in ("staff reply to the phone", "phone words", "hello from the phone",
                  "anyone in a group") + wa_words:
        assert web.never_got(words), (words, web.feed())
    for words in ("staff reply to the web guest", "web words", "directly", "are you there",
                  "anyone else here") + wa_words:
        assert sms.never_got(words), (words, sms.got())
    for words in ("staff reply to the web guest", "staff reply to the phone", "web words", "phone words",
                  "directly", "are you there", "anyone else here", "hello from the phone",
                  "anyone in a group", "another number"):
        assert wa.never_got(words), (words, wa.got())
    assert not [b for b in bodies(env, web.room) + bodies(env, sms.room) if any(w in b for w in wa_words)]
    wa_room = bodies(env, wa.room)
    assert not [b for b in wa_room if "web words" in b or "phone words" in b or "directly" in b
                or "hello from the phone" in b or "another number" in b], wa_room
    assert not [b for b in wa_room + bodies(env, web.room) + bodies(env, sms.room)
                if "another business number" in b]
    web_room, sms_room = bodies(env, web.room), bodies(env, sms.room)
    assert not [b for b in sms_room if "web words" in b or "directly" in b or "are you there" in b
                or "anyone else" in b], sms_room
    assert not [b for b in web_room if "phone words" in b or "hello from the phone" in b
                or "another number" in b], web_room
    assert not [b for b in sms_room + web_room if "another number" in b]

    # ---- 2. one support group, by the documented commands ----------------------------------
    group = make_service_group(env, staff_room)
    for g in guests:
        staff_says(env, group, "!threshold group add %s" % g.pseudonym)
        wait_membership(env, "staff", group, g.user_id, "join")

    # each is told, once and in their language, how to write to the group
    for g in guests:
        t = g.wait_got("start your message with # and a space")
        body = t if isinstance(t, str) else t.get("body")
        assert body.startswith("You are now in a support group"), t  # the service's, not the group's
    staff_says(env, group, "Welcome to the group, everyone")
    web.wait_got("Welcome to the group, everyone")
    t = sms.wait_got("Welcome to the group, everyone")
    assert t.startswith("# "), t  # the phone can tell the group from the conversation
    t = wa.wait_got("Welcome to the group, everyone")
    assert t.startswith("# ") and t.endswith(": Welcome to the group, everyone"), t

    # the web guest's group message: a text under the web guest's pseudonym
    t0 = time.monotonic()
    web.write("# hello group, from the web page")
    wait_in_room(env, group, web.user_id, "hello group, from the web page")
    t = sms.wait_got("hello group, from the web page")
    print("web guest's group message reached the phone in %.2f s" % (time.monotonic() - t0))
    assert t == "# %s: hello group, from the web page" % web.pseudonym, t
    assert web.user_id not in t and "@" not in t, t
    t = wa.wait_got("hello group, from the web page")
    assert t == "# %s: hello group, from the web page" % web.pseudonym, t

    # the SMS guest's group message: in the group and on the web page, by pseudonym
    t0 = time.monotonic()
    sms.write("# hello group, from my phone")
    wait_in_room(env, group, sms.user_id, "hello group, from my phone")
    e = web.wait_got("hello group, from my phone")
    print("SMS guest's group message reached the web page in %.2f s" % (time.monotonic() - t0))
    assert e["from"] == {"role": "guest", "name": sms.pseudonym}, e
    assert e["body"] == "hello group, from my phone", e
    t = wa.wait_got("hello group, from my phone")
    assert t == "# %s: hello group, from my phone" % sms.pseudonym, t

    # the WhatsApp guest's group message: in the group, on the page and the phone, by pseudonym
    t0 = time.monotonic()
    wa.write("# hello group, from WhatsApp")
    wait_in_room(env, group, wa.user_id, "hello group, from WhatsApp")
    e = web.wait_got("hello group, from WhatsApp")
    print("WhatsApp guest's group message reached the web page in %.2f s" % (time.monotonic() - t0))
    assert e["from"] == {"role": "guest", "name": wa.pseudonym}, e
    assert e["body"] == "hello group, from WhatsApp", e
    t = sms.wait_got("hello group, from WhatsApp")
    assert t == "# %s: hello group, from WhatsApp" % wa.pseudonym, t
    wa.write("a private WhatsApp word for staff")
    wait_in_room(env, wa.room, wa.user_id, "a private WhatsApp word for staff")
    # a hashtag or a number is not the mark: "#1 thing" stays with staff
    sms.write("#1 thing I want to say to staff only")
    wait_in_room(env, sms.room, sms.user_id, "#1 thing I want to say to staff only")
    # words without '#' stay private, whoever is in a group
    sms.write("a private word for staff")
    wait_in_room(env, sms.room, sms.user_id, "a private word for staff")
    web.write("my own private word")
    wait_in_room(env, web.room, web.user_id, "my own private word")
    time.sleep(3)
    assert web.never_got("a private word for staff")
    assert sms.never_got("my own private word")
    assert wa.never_got("hello group, from WhatsApp"), wa.got()  # not sent back to its writer
    for words in ("a private word for staff", "my own private word", "thing I want to say"):
        assert wa.never_got(words), (words, wa.got())
    assert web.never_got("private WhatsApp word") and sms.never_got("private WhatsApp word")
    assert not any("private WhatsApp word" in b for b in bodies(env, group))
    assert "a private word for staff" not in bodies(env, group)
    assert not any("thing I want to say" in b for b in bodies(env, group))
    assert web.never_got("thing I want to say")
    assert "my own private word" not in bodies(env, group)

    # ---- 3. removed from the group: nothing more of it reaches the phones ------------------
    for g in (sms, wa):
        staff_says(env, group, "!threshold group remove %s" % g.pseudonym)
        wait_membership(env, "staff", group, g.user_id, "leave")
    staff_says(env, group, "after the phone left the group")
    web.write("# web words after the phone left")
    web.wait_got("after the phone left the group")
    wait_in_room(env, group, web.user_id, "web words after the phone left")
    # '#' from the phone now stays with staff: it is in no group
    sms.write("# still in the group?")
    wait_in_room(env, sms.room, sms.user_id, "# still in the group?")
    staff_says(env, sms.room, "staff to the phone, after")
    sms.wait_got("staff to the phone, after")  # the phone still hears its own conversation
    wa.write("# still in the group, WhatsApp?")
    wait_in_room(env, wa.room, wa.user_id, "# still in the group, WhatsApp?")
    staff_says(env, wa.room, "staff to whatsapp, after")
    wa.wait_got("staff to whatsapp, after")
    time.sleep(2)
    for words in ("after the phone left the group", "web words after the phone left"):
        assert wa.never_got(words), (words, wa.got())
    assert web.never_got("WhatsApp?") and sms.never_got("WhatsApp?")
    assert not any("still in the group, WhatsApp" in b for b in bodies(env, group))
    assert sms.never_got("after the phone left the group"), sms.got()
    assert sms.never_got("web words after the phone left"), sms.got()
    assert web.never_got("still in the group"), web.feed()

    # ---- 4. STOP (even written for the group) ends everything ------------------------------
    staff_says(env, group, "!threshold group add %s" % sms.pseudonym)
    wait_membership(env, "staff", group, sms.user_id, "join")
    staff_says(env, group, "welcome back to the group")
    sms.wait_got("welcome back to the group")
    sms.write("#STOP")
    sms.wait_got("This conversation has ended")
    wait_membership(env, "staff", sms.room, sms.user_id, "leave")
    wait_membership(env, "staff", group, sms.user_id, "leave")
    staff_says(env, group, "anything after the stop")
    web.wait_got("anything after the stop")
    time.sleep(2)
    assert sms.never_got("anything after the stop"), sms.got()
    assert not [b for b in bodies(env, group) if "STOP" in b.upper() and "after the stop" not in b]
    assert web.never_got("STOP")

    # ---- 5. the numbers are nowhere in clear -------------------------------------------------
    line.hang_up()
    for needle in (PHONE, WA_NUMBER):
        number_nowhere(env, threshold, web, (web.room, sms.room, wa.room, group, staff_room), needle)


def number_nowhere(env, threshold, web, rooms, needle):
    feed_text = repr(web.feed())
    assert needle not in feed_text
    for room in rooms:
        r = requests.get("%s/_matrix/client/v3/rooms/%s/state" % (env.hs_url, q(room)),
                         headers=bearer(env.token("staff")), timeout=30)
        assert r.status_code == 200, r.text
        assert needle not in r.text, "the phone number is in the state of %s" % room
        assert needle not in repr(history(env, room)), "the phone number is in %s" % room
    assert needle not in threshold.log_since_start()
    with open(threshold.log_path, "rb") as f:
        assert needle.encode() not in f.read()
    dbs = glob.glob(os.path.join(env.hs.host_dir, "homeserver.db*"))
    assert dbs, "no Synapse database found under %s" % env.hs.host_dir
    for path in dbs:
        with open(path, "rb") as f:
            assert needle.encode() not in f.read(), "the phone number is in %s" % path
    db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(
        os.path.join(env.hs.host_dir, "homeserver.db")), uri=True)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert dump and "CREATE TABLE" in dump
    assert needle not in dump, "the phone number is in Synapse's database"
