"""The SMS channel end to end, with real parts: Kannel's bearerbox and smsbox
with its fake SMSC, driven by Kannel's own fakesmsc (kannel-extras) as the
person's phone; a real Synapse; staff as a Matrix client.  And the
Twilio-compatible driver against a local fake of its REST API, with webhooks
signed by the real algorithm.

A text in gets the language menu, a number gets the notice, YES opens the
conversation (nothing before reaches staff), staff's reply arrives back as a
text, STOP ends it, DELETE erases it; the number is nowhere in Synapse's
database, Threshold's log or its store in clear.
"""

import base64
import glob
import hashlib
import hmac
import http.server
import json
import os
import shutil
import threading
import time
import urllib.parse

import pytest
import requests

import synapse as harness
from kannel import PASSWORD, USERNAME, Kannel, Phone
from kannel import installed as kannel_installed
from helpers import audit_records, staff_room_with_bot, staff_says, wait_membership
from mx import Client, poll, run

SERVICE_NUMBER = "4477009"
PHONE = "447700900461"  # the person's number: must appear nowhere in clear
SECRET = "kannel-test-secret-0123456789"
NOTICE_EN = "Text helpline run by the test charity. Messages are kept 30 days."
GREETING = "Hello, you are through to the text helpline."

pytestmark = pytest.mark.skipif(not kannel_installed(),
                                reason="Kannel (kannel, kannel-extras) is not installed: "
                                       "bash scripts/install-deps.sh")


def staff_room_events(env, room):
    async def read():
        async with Client.for_user(env, "staff") as s:
            return await s.history(room)
    return run(read())


def waiting_by_sms(env, staff_room, timeout=30):
    """The conversation room of the "<pseudonym> (by SMS) is waiting" notice."""
    async def find():
        async with Client.for_user(env, "staff") as s:
            async def notice():
                for ev in reversed(await s.history(staff_room)):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and "(by SMS) is waiting" in body:
                        return body
                return None
            return await poll(notice, timeout=timeout, what="the staff room's waiting notice")
    body = run(find())
    return body, body.rsplit("/#/", 1)[1].strip()


def restart(env):
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


@pytest.fixture(scope="module")
def kannel_service(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Text helpline staff")
    sms_port = harness.free_port()
    kannel = Kannel(os.path.join(env.workdir, "kannel"), sms_port, SECRET)
    env.services = {"texts": {
        "display_name": "Text Helpline",
        "staff_room": staff_room,
        "greeting": GREETING,
        "notice_version": "2",
        "notice": {"en": NOTICE_EN, "fr": "Ligne d'aide par texto de l'association de test."},
        "sms_number": "+" + SERVICE_NUMBER,
    }}
    env.sms = {"enabled": True, "driver": "kannel", "listen_address": "127.0.0.1",
               "listen_port": sms_port, "secret": SECRET,
               "kannel_sendsms_url": kannel.sendsms_url, "kannel_username": USERNAME,
               "kannel_password": PASSWORD}
    env.gateway_settings = {"languages": ["en", "fr"]}
    restart(env)
    phone = None
    try:  # a Kannel that fails to start leaves the shared config as it was
        kannel.start()
        phone = Phone(kannel.dir, kannel.smsc_port, PHONE, SERVICE_NUMBER)
        yield {"staff_room": staff_room, "phone": phone, "kannel": kannel, "port": sms_port}
    finally:
        if phone is not None:
            phone.hang_up()
        kannel.stop()
        env.services = None
        env.sms = None
        env.gateway_settings = {}
        restart(env)


def test_sms_end_to_end(env, threshold, kannel_service):
    phone = kannel_service["phone"]
    staff_room = kannel_service["staff_room"]

    # 1. A first text gets the language menu, and nothing reaches staff.
    phone.send("hello, I need some help")
    phone.wait_for("1 English / 2 Fran")
    # 2. A number chooses the language: the notice, and how to agree.
    phone.send("1")
    phone.wait_for(NOTICE_EN)
    phone.wait_for("Reply YES to agree")
    assert not [e for e in staff_room_events(env, staff_room)
                if "(by SMS)" in e.get("content", {}).get("body", "")]
    assert not [r for r in audit_records(threshold, "consent_recorded")
                if r.get("details", {}).get("entry") == "sms"
                and r.get("details", {}).get("service") == "texts"]
    # 3. YES: consent recorded, the conversation opens, staff are told "by SMS".
    phone.send("YES")
    phone.wait_for("Your messages now reach the team")
    body, room = waiting_by_sms(env, staff_room)
    guest = None
    consent = [r for r in audit_records(threshold, "consent_recorded")
               if r.get("details", {}).get("entry") == "sms"
               and r.get("details", {}).get("service") == "texts"]
    assert len(consent) == 1, consent
    guest = consent[0]["subject"]
    assert consent[0]["details"]["language"] == "en"
    assert consent[0]["details"]["notice_version"] == "2"
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, urllib.parse.quote(room)),
                      headers={"Authorization": "Bearer " + env.token("staff")}, json={}, timeout=30)
    assert r.status_code == 200, r.text
    # the service's greeting reaches the phone from the feed, by sendsms
    phone.wait_for(GREETING)

    # 4. The person's words reach staff as the guest; the first text never did.
    phone.send("my words for the staff")

    async def words():
        async with Client.for_user(env, "staff") as s:
            async def seen():
                evs = await s.history(room)
                return [e for e in evs if e.get("sender") == guest
                        and e.get("content", {}).get("body") == "my words for the staff"] or None
            await poll(seen, timeout=30, what="the guest's words in the room")
            return await s.history(room)
    history = run(words())
    bodies = [e.get("content", {}).get("body", "") for e in history]
    assert not [b for b in bodies if "I need some help" in b], bodies

    # 5. Staff's reply arrives back as a text, through Kannel's sendsms.
    t0 = time.monotonic()
    staff_says(env, room, "Hello from the staff, how can we help?")
    phone.wait_for("Hello from the staff, how can we help?")
    print("staff reply reached the phone in %.2f s" % (time.monotonic() - t0))

    # 6. STOP ends it: plain confirmation, on the record, the guest left.
    phone.send("STOP")
    phone.wait_for("This conversation has ended")
    wait_membership(env, "staff", room, guest, "leave")
    withdrawn = audit_records(threshold, "consent_withdrawn", subject=guest)
    assert len(withdrawn) == 1, withdrawn
    before = len(phone.received())
    staff_says(env, room, "are you still there?")
    time.sleep(3)
    assert not [t for t in phone.received()[before:] if "still there" in t]

    # 7. DELETE erases it: confirmation, the words redacted, the key destroyed.
    phone.send("DELETE")
    phone.wait_for("are being erased")

    async def redacted():
        async with Client.for_user(env, "staff") as s:
            async def gone():
                for e in await s.history(room):
                    if e.get("sender") == guest and e.get("type") == "m.room.message":
                        if e.get("content", {}).get("body"):
                            return None
                return True
            await poll(gone, timeout=30, what="the guest's words redacted")
    run(redacted())
    assert audit_records(threshold, "data_erased", subject=guest)
    # a later text is a fresh start, notice first
    phone.send("hello again")
    phone.wait_for("Reply with the number of your language")
    phone.hang_up()

    # 8. The number is nowhere in clear: Synapse's database, Threshold's log and store.
    threshold.run("status")  # the store is readable
    needle = PHONE.encode()
    files = glob.glob(os.path.join(env.hs.host_dir, "homeserver.db*"))
    assert files, "no Synapse database found under %s" % env.hs.host_dir
    files += [threshold.log_path] + [f for f in glob.glob(os.path.join(env.store_path, "**"), recursive=True)
                                        if os.path.isfile(f)]  # the spool's files too
    for path in files:
        with open(path, "rb") as f:
            assert needle not in f.read(), "the phone number is in %s" % path


def test_kannel_secret_and_caps(env, threshold, kannel_service):
    base = "http://127.0.0.1:%d/sms/kannel" % kannel_service["port"]
    q = {"from": "447700900999", "to": SERVICE_NUMBER, "text": "hi", "id": "x1"}
    assert requests.get(base + "/wrong-secret-0123456789", params=q, timeout=10).status_code == 404
    assert requests.get(base, params=q, timeout=10).status_code == 404
    r = requests.get(base, params=q, headers={"X-Threshold-Secret": SECRET}, timeout=10)
    assert r.status_code == 200 and "1 English" in r.text
    r = requests.post(base + "/" + SECRET, data="x" * 20000, timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    # per number: at most 10 a minute
    codes = [requests.get(base + "/" + SECRET, params=dict(q, id="n%d" % i, text="hi"),
                          timeout=10).status_code for i in range(12)]
    assert codes.count(429) >= 2, codes


class SendsmsRecorder:
    """Passes each sendsms request on to the real smsbox unchanged, noting its
    query: the test learns the dlr-url Threshold gave Kannel (the person's
    texts are still sent and reported by the real Kannel)."""

    def __init__(self, target):
        self.queries = []
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                rec.queries.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                try:
                    r = requests.get(target + "?" + urllib.parse.urlsplit(self.path).query, timeout=10)
                    code, body = r.status_code, r.content
                except requests.RequestException:
                    code, body = 502, b""
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/cgi-bin/sendsms" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def delivery_counts(metrics_url):
    text = requests.get(metrics_url, timeout=10).text
    counts = {}
    for line in text.splitlines():
        if line.startswith("threshold_channel_delivery_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels[len("threshold_channel_delivery_total"):]] = int(float(value))
    return counts, text


def test_kannel_delivery_reports(env, threshold, kannel_service):
    """Texts ask Kannel for delivery reports; the real fake SMSC reports each
    as delivered (type 1), counted by state; a failed report on the last
    text (the same dlr-url with type 2, as Kannel calls it) becomes a notice
    in the conversation room, once; one on an earlier text is only counted."""
    import yaml
    kannel, staff_room = kannel_service["kannel"], kannel_service["staff_room"]
    kannel_service["phone"].hang_up()
    recorder = SendsmsRecorder(kannel.sendsms_url)
    metrics_port = harness.free_port()
    env.sms = dict(env.sms, kannel_sendsms_url=recorder.url)
    env.write_config()
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["metrics"] = {"enabled": True, "bind": "127.0.0.1", "port": metrics_port}
    with open(env.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    env.threshold.stop()
    env.threshold.start()
    metrics_url = "http://127.0.0.1:%d/metrics" % metrics_port
    number = "447700900463"
    phone = Phone(kannel.dir, kannel.smsc_port, number, SERVICE_NUMBER)
    try:
        before, _ = delivery_counts(metrics_url)
        assert before == {'{channel="sms",state="%s"}' % s: 0
                          for s in ("accepted", "buffered", "delivered", "failed")}, before
        seen = {e.get("content", {}).get("body", "") for e in staff_room_events(env, staff_room)}
        phone.send("hello")
        phone.wait_for("1 English")
        phone.send("1")
        phone.wait_for("Reply YES")
        phone.send("YES")
        phone.wait_for("Your messages now reach the team")
        deadline = time.monotonic() + 90  # waiting notices come at most once a minute
        new = []
        while not new and time.monotonic() < deadline:
            new = [e["content"]["body"] for e in staff_room_events(env, staff_room)
                   if e.get("sender") == env.bot and "(by SMS) is waiting" in e.get("content", {}).get("body", "")
                   and e["content"]["body"] not in seen]
            time.sleep(0.5)
        assert new, "no new waiting notice"
        room = new[-1].rsplit("/#/", 1)[1].strip()
        r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, urllib.parse.quote(room)),
                          headers={"Authorization": "Bearer " + env.token("staff")}, json={}, timeout=30)
        assert r.status_code == 200, r.text
        phone.wait_for(GREETING)  # by sendsms: reports asked for
        staff_says(env, room, "Are you still there?")
        phone.wait_for("Are you still there?")
        sent = [q for q in recorder.queries if q.get("to") == [number]]
        assert len(sent) >= 2, sent  # the greeting (with the helper's words, if any) and the reply
        assert "Are you still there?" in sent[-1]["text"][0]
        urls = []
        for q in sent:
            assert q["dlr-mask"] == ["19"], q  # delivered, failed, SMSC refused
            url = q["dlr-url"][0]
            prefix = "http://127.0.0.1:%d/sms/kannel-dlr/%s?id=" % (kannel_service["port"], SECRET)
            assert url.startswith(prefix) and url.endswith("&type=%d"), url
            assert len(url[len(prefix):-len("&type=%d")]) == 32 and number not in url
            urls.append(url)
        assert len(set(urls)) == len(urls)
        urls = [urls[0], urls[-1]]
        # the fake SMSC reports each as delivered (Kannel's type 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts, text = delivery_counts(metrics_url)
            if counts['{channel="sms",state="delivered"}'] >= len(sent):
                break
            time.sleep(0.3)
        assert counts['{channel="sms",state="delivered"}'] == len(sent), counts
        assert number not in text and room not in text

        def notices():
            return [e for e in staff_room_events(env, room) if e.get("sender") == env.bot
                    and "could not be delivered" in e.get("content", {}).get("body", "")]
        assert notices() == []
        # wrong secret, bad type: refused, nothing counted
        assert requests.get(urls[1].replace(SECRET, "wrong-secret").replace("%d", "2"),
                            timeout=10).status_code == 404
        assert requests.get(urls[1].replace("%d", "3"), timeout=10).status_code == 400
        # a failed report on the earlier text (the greeting): counted, nobody told
        assert requests.get(urls[0].replace("%d", "2"), timeout=10).status_code == 200
        # on the last text: staff are told in the conversation room, once
        assert requests.get(urls[1].replace("%d", "2"), timeout=10).status_code == 200
        assert requests.get(urls[1].replace("%d", "16"), timeout=10).status_code == 200

        deadline = time.monotonic() + 20
        while not notices() and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.5)
        got = notices()
        assert [e["content"]["body"] for e in got] == ["The last text to this person could not be delivered."]
        assert number not in json.dumps(got)
        counts, _ = delivery_counts(metrics_url)
        assert counts['{channel="sms",state="failed"}'] == 3, counts
        # the earlier text's id was forgotten when the next went out; the last one's is kept
        assert threshold.log_since_start().count("(failed) on a text no longer kept") == 1
        def kept_ids():
            """The text ids whose report Threshold keeps (STORE_META "chan/d/<id>")."""
            import re
            import subprocess
            dump = subprocess.run(["mdb_dump", "-p", "-s", "meta", env.store_path], capture_output=True,
                                  text=True)
            assert dump.returncode == 0, dump.stderr
            return set(re.findall(r"^ chan/d/([0-9a-f]{32})$", dump.stdout, re.M))
        ids = [u.split("?id=", 1)[1].split("&", 1)[0] for u in urls]
        assert ids[1] in kept_ids() and ids[0] not in kept_ids()  # only the last text's
        # DELETE: what was kept of the reports goes with the guest
        guest = [e for e in staff_room_events(env, room) if e.get("sender", "").startswith("@guest_")][0]["sender"]
        phone.send("DELETE")
        phone.wait_for("erased")
        deadline = time.monotonic() + 30
        while not audit_records(threshold, "data_erased", subject=guest) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert audit_records(threshold, "data_erased", subject=guest)
        assert ids[1] not in kept_ids()
        assert requests.get(urls[1].replace("%d", "2"), timeout=10).status_code == 200
        time.sleep(0.5)
        assert threshold.log_since_start().count("a delivery report (failed) on a text no longer kept") == 2
        assert number not in threshold.log_since_start()
    finally:
        phone.hang_up()
        recorder.stop()
        env.sms = dict(env.sms, kannel_sendsms_url=kannel.sendsms_url)
        restart(env)


# ---- the Twilio-compatible driver -----------------------------------------------------------

TWILIO_SID = "AC" + "0" * 30 + "42"
TWILIO_TOKEN = "test-auth-token-7f3a"


def twilio_signature(token, url, params):
    """As documented: base64(HMAC-SHA1(token, url + each param sorted by name, name+value))."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_twilio_signature_published_example():
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                            params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


class FakeTwilio(http.server.BaseHTTPRequestHandler):
    sent = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
        FakeTwilio.sent.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                "form": form})
        body = json.dumps({"sid": "SM%032d" % len(FakeTwilio.sent), "status": "queued"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def twilio_service(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Twilio helpline staff")
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeTwilio)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    sms_port = harness.free_port()
    hook = "http://127.0.0.1:%d/sms/twilio" % sms_port
    env.services = {"tw": {"display_name": "Twilio Helpline", "staff_room": staff_room,
                           "greeting": GREETING, "notice": {"en": NOTICE_EN},
                           "sms_number": "+15005550001"}}
    env.sms = {"enabled": True, "driver": "twilio", "listen_port": sms_port,
               "twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN,
               "twilio_api_url": "http://127.0.0.1:%d" % api.server_address[1],
               "twilio_webhook_url": hook}
    restart(env)
    try:
        yield {"hook": hook, "staff_room": staff_room}
    finally:
        api.shutdown()
        env.services = None
        env.sms = None
        restart(env)


def post_signed(hook, params, signature=None, omit=False):
    headers = {}
    if not omit:
        headers["X-Twilio-Signature"] = (signature if signature is not None
                                         else twilio_signature(TWILIO_TOKEN, hook, params))
    return requests.post(hook, data=params, headers=headers, timeout=30)


def test_twilio_webhook(env, threshold, twilio_service):
    hook = twilio_service["hook"]
    msg = {"From": "+15005550006", "To": "+15005550001", "Body": "hello", "MessageSid": "SMaaaa0001",
           "AccountSid": TWILIO_SID, "NumMedia": "0"}
    # missing and bad signatures are refused, and change nothing
    assert post_signed(hook, msg, omit=True).status_code == 403
    assert post_signed(hook, msg, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ=").status_code == 403
    tampered = dict(msg, Body="hello!")
    assert post_signed(hook, tampered, signature=twilio_signature(TWILIO_TOKEN, hook, msg)).status_code == 403
    wrong_url = twilio_signature(TWILIO_TOKEN, hook + "?x=1", msg)
    assert post_signed(hook, msg, signature=wrong_url).status_code == 403
    # a good one is answered with TwiML: the language menu
    r = post_signed(hook, msg)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/xml")
    assert "<Message>" in r.text and "1 English" in r.text
    # replayed (same MessageSid, same signature): handled once, answered with nothing
    r = post_signed(hook, msg)
    assert r.status_code == 200 and "<Message>" not in r.text
    # the steps go on: notice, YES; then the greeting goes out by the REST API
    r = post_signed(hook, dict(msg, Body="1", MessageSid="SMaaaa0002"))
    assert NOTICE_EN in r.text
    r = post_signed(hook, dict(msg, Body="yes", MessageSid="SMaaaa0003"))
    assert "Your messages now reach the team" in r.text

    def greeting_sent():
        return [s for s in FakeTwilio.sent if GREETING in s["form"].get("Body", "")]
    deadline = time.monotonic() + 30
    while not greeting_sent() and time.monotonic() < deadline:
        time.sleep(0.2)
    sent = greeting_sent()
    assert len(sent) == 1, FakeTwilio.sent
    s = sent[0]
    assert s["path"] == "/2010-04-01/Accounts/%s/Messages.json" % TWILIO_SID
    assert s["auth"] == "Basic " + base64.b64encode(
        ("%s:%s" % (TWILIO_SID, TWILIO_TOKEN)).encode()).decode()
    assert s["form"]["To"] == "+15005550006" and s["form"]["From"] == "+15005550001"
    # the number never reached the log
    assert "15005550006" not in threshold.log_since_start()
