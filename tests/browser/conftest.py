"""Browser tests of the guest page: the real daemon and gateway against a real
Synapse (tests/integration's harness, reused as it is), the page in Debian's
Chromium (driver.mjs through browser.py), staff as a matrix-nio client.

Fixtures:
  env, threshold  from tests/integration/conftest.py
  gw              a service "helpline" configured, the gateway up, and the
                  staff side of a conversation (see class Gateway)
  browser         make a Browser(width=..., height=...); closed afterwards
  shots           shots(b, name) saves the viewport as <dir>/guest-<name>.png

Environment (besides tests/integration's):
  THRESHOLD_SCREENSHOTS  where screenshots go: default docs/images in the
                         source tree (what docs/guest-experience.md shows);
                         "off" for none.  ctest sets it to the build tree.
  CHROMIUM               the browser (default /usr/bin/chromium)
"""

import importlib.util
import json
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(HERE, "..", "integration")
sys.path.insert(0, INTEGRATION)
sys.path.insert(0, HERE)

# tests/integration/conftest.py under its own name; its fixtures and its
# failure-report hook are this directory's too.  Its helper modules import
# `conftest` for SERVER_NAME: this module re-exports it.
_spec = importlib.util.spec_from_file_location("integration_conftest",
                                               os.path.join(INTEGRATION, "conftest.py"))
_it = importlib.util.module_from_spec(_spec)
sys.modules["integration_conftest"] = _it
_spec.loader.exec_module(_it)
SERVER_NAME = _it.SERVER_NAME
SOURCE_DIR = _it.SOURCE_DIR
env = _it.env
threshold = _it.threshold
pytest_runtest_makereport = _it.pytest_runtest_makereport

from browser import Browser  # noqa: E402
from gateway import API, invite_link_token, join_portal, wait_gateway  # noqa: E402
from helpers import staff_room_with_bot, staff_says  # noqa: E402
from mx import Client, poll, run  # noqa: E402

PAGE_TITLE = "Weather notes"
NOTICE = {
    "en": "This chat is run by the Test Charity's helpline.\n\n"
          "What we keep: your messages, under a made-up name, for 30 days.\n"
          "Who can see them: our helpline staff, and nobody else.\n"
          "Your rights: you can stop at any time, and you can ask us to delete your "
          "messages with the \"Delete my data\" button.",
    "ar": "تدير هذه المحادثة خدمة المساعدة في جمعية الاختبار الخيرية.\n\n"
          "ما نحتفظ به: رسائلك باسم مستعار لمدة 30 يومًا.\n"
          "من يمكنه رؤيتها: فريق خط المساعدة فقط.\n"
          "حقوقك: يمكنك التوقف في أي وقت، ويمكنك حذف رسائلك بزر «حذف بياناتي».",
}


class _Elsewhere(BaseHTTPRequestHandler):
    """A neutral site on another origin: where Quick exit goes, and where the
    browser was before it opened the link."""

    def do_GET(self):
        body = b"<!doctype html><meta charset=utf-8><title>Weather</title><h1>Weather</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Gateway:
    """The gateway as the page sees it, and the staff side of its conversations."""

    def __init__(self, env, threshold, staff_room, elsewhere):
        self.env = env
        self.threshold = threshold
        self.staff_room = staff_room
        self.url = env.gw_url + "/"
        self.page_title = PAGE_TITLE
        self.before_url = elsewhere + "/before"
        self.exit_url = elsewhere + "/elsewhere"
        self._portals = {}

    def invite_link(self):
        """A new one-use invitation link, as staff would send it."""
        r = self.threshold.run("invite", "create", "--service", "helpline", "--json")
        link = json.loads(r.stdout)["link"]
        assert link.startswith(self.env.gw_url + "/#invite="), link
        return link

    def invite(self):
        return invite_link_token(self.invite_link())

    def invitation_ok(self, token):
        r = requests.post(self.env.gw_url + API + "/invitation", json={"invite": token}, timeout=10)
        return r.status_code == 200

    def portal(self, pseudonym, timeout=60):
        """Staff read the bot's "is waiting" notice in the staff room and join
        the conversation's room from it; its id."""
        if pseudonym in self._portals:
            return self._portals[pseudonym]
        room = join_portal(self.env, self.staff_room, pseudonym, timeout)
        self._portals[pseudonym] = room
        return room

    def history(self, room):
        async def read():
            async with Client.for_user(self.env, "staff") as c:
                return await c.history(room)
        return run(read())

    def staff_sees(self, pseudonym, text, timeout=60):
        """Staff receive `text` in the conversation, sent by the guest under the
        pseudonym; (room, event id)."""
        room = self.portal(pseudonym)

        async def look():
            async with Client.for_user(self.env, "staff") as s:
                async def msg():
                    for ev in await s.history(room):
                        if ev.get("content", {}).get("body") == text:
                            return ev
                ev = await poll(msg, timeout=timeout, what="the guest's message in the portal room")
                return ev, await s.profile(ev["sender"])

        ev, prof = run(look())
        assert ev["sender"].startswith("@guest_"), ev
        assert prof.displayname == pseudonym, (prof.displayname, pseudonym)
        return room, ev["event_id"]

    def staff_says(self, room, text):
        return staff_says(self.env, room, text)

    def staff_redacts(self, room, event_id):
        """Staff remove a message in Element ("Remove")."""
        async def redact():
            async with Client.for_user(self.env, "staff") as s:
                r = await s.nio.room_redact(room, event_id, reason="sent in error")
                assert getattr(r, "event_id", None), r
        run(redact())

    def staff_sends_file(self, room, data, name, mimetype, msgtype="m.file"):
        """Staff upload a file and send it into the room, as Element does."""
        async def send():
            async with Client.for_user(self.env, "staff") as s:
                return await s.send_file(room, data, name, mimetype, msgtype)
        return run(send())

    def staff_sees_erased(self, room, event_id, timeout=60):
        """The message is redacted, staff see the neutral notice, the guest left."""
        deadline = time.monotonic() + timeout
        while True:
            evs = self.history(room)
            sender = next((ev["sender"] for ev in evs if ev.get("event_id") == event_id), None)
            msg = next((ev for ev in evs if ev.get("event_id") == event_id), None)
            gone = msg is None or not msg.get("content")
            notice = any("asked for their data to be deleted" in ev.get("content", {}).get("body", "")
                         for ev in evs)
            left = sender is not None and any(
                ev.get("type") == "m.room.member" and ev.get("state_key") == sender
                and ev.get("content", {}).get("membership") == "leave" for ev in evs)
            if gone and notice and (left or sender is None):
                return
            assert time.monotonic() < deadline, json.dumps(evs, indent=1)[-3000:]
            time.sleep(0.5)




@pytest.fixture(scope="session")
def node_ready():
    if not shutil.which("node"):
        pytest.fail("node is not installed: run scripts/install-deps.sh")
    if not os.path.isdir(os.path.join(HERE, "node_modules", "playwright-core")):
        pytest.fail("tests/browser/node_modules is missing: run scripts/install-deps.sh")
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.fail("%s is missing: run scripts/install-deps.sh" % chromium)


@pytest.fixture(scope="module")
def gw(env, node_ready):
    """A service "helpline" with its staff room, the exit site up, the gateway
    serving the page; put back as it was afterwards."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), _Elsewhere)
    threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
    elsewhere_url = "http://127.0.0.1:%d" % elsewhere.server_address[1]
    staff_room = staff_room_with_bot(env, "Helpline staff (browser tests)")
    env.services = {"helpline": {
        "display_name": "Test Helpline",
        "staff_room": staff_room,
        "greeting": "Hello, you are through to the test helpline.",
        "notice_version": "1",
        "notice": NOTICE,
        "public_entry": True,
        "public_per_hour": 1000,
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


@pytest.fixture
def browser(node_ready):
    opened = []

    def make(**kw):
        b = Browser(**kw)
        opened.append(b)
        return b

    yield make
    for b in opened:
        b.close()


@pytest.fixture(scope="session")
def shots():
    where = os.environ.get("THRESHOLD_SCREENSHOTS", os.path.join(SOURCE_DIR, "docs", "images"))
    if where == "off":
        return None
    os.makedirs(where, exist_ok=True)

    def save(b, name):
        return b.call("screenshot", path=os.path.join(where, "guest-%s.png" % name), full=False)

    return save
