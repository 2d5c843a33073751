"""The WhatsApp channel end to end: a real Synapse, staff as a Matrix
client, and a local stand-in for Meta's Cloud API (fakemeta.py) that speaks
its wire format and signs webhooks as Meta does.

A first message gets the language menu by the Graph API (the webhook is
always answered 200 with nothing), a number the notice, YES opens the
conversation; staff's reply reaches the fake's /messages.  Bad, missing and
replayed signatures are refused or processed once; statuses arrive out of
order; outside the 24-hour window staff's words wait, one content-free
template invites the person back, and what waited goes out when they write
again; a picture's GPS never reaches staff; the number appears nowhere in
Synapse's database, Threshold's log or its store.
"""

import base64
import glob
import json
import os
import time
import urllib.parse

import pytest
import requests
import yaml

import synapse as harness
from fakemeta import FakeMeta, message, signature, status
from media_samples import JPEG_16X8
from helpers import audit_records, bearer, staff_room_with_bot, staff_says
from mx import Client, poll, run
from test_doctor import attention, config_copy, doctor, findings, scratch, status_of  # noqa: F401 (scratch: a fixture)
from test_gateway import _jpeg_with_exif, jpeg_markers
from test_metrics import parse, value

PNID = "106540352242922"
PHONE = "447700900777"  # the person's WhatsApp id: must appear nowhere in clear
PHONE2 = "447700900778"
APP_SECRET = "app-secret-9f8e7d6c5b4a"
VERIFY_TOKEN = "verify-token-0123"
ACCESS_TOKEN = "EAAG-test-access-token"
NOTICE_EN = "WhatsApp helpline run by the test charity. Messages are kept 30 days."
GREETING = "Hello, you are through to the WhatsApp helpline."
TEMPLATE = "conversation_waiting"


def secret_file(d, name, value):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def restart(env):
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


@pytest.fixture(scope="module")
def wa(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "WhatsApp helpline staff")
    meta = FakeMeta(ACCESS_TOKEN, phone_number_ids=[PNID])
    port = harness.free_port()
    d = os.path.join(env.workdir, "whatsapp")
    os.makedirs(d, exist_ok=True)
    env.services = {"chat": {"display_name": "WhatsApp Helpline", "staff_room": staff_room,
                             "greeting": GREETING, "notice": {"en": NOTICE_EN},
                             "whatsapp_phone_number_id": PNID}}
    env.whatsapp = {"enabled": True, "listen_address": "127.0.0.1", "listen_port": port,
                    "app_secret_file": secret_file(d, "app-secret", APP_SECRET),
                    "verify_token_file": secret_file(d, "verify-token", VERIFY_TOKEN),
                    "access_token_file": secret_file(d, "access-token", ACCESS_TOKEN),
                    "graph_url": meta.url, "api_version": "v21.0",
                    "template_name": TEMPLATE, "template_language": "en"}
    env.gateway_settings = {"languages": ["en", "fr"]}
    env.write_config()
    metrics_port = harness.free_port()
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["metrics"] = {"enabled": True, "bind": "127.0.0.1", "port": metrics_port}
    with open(env.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    env.threshold.stop()
    env.threshold.start()
    try:
        yield {"hook": "http://127.0.0.1:%d/whatsapp" % port, "meta": meta, "staff_room": staff_room,
               "metrics": "http://127.0.0.1:%d/metrics" % metrics_port}
    finally:
        meta.stop()
        env.services = None
        env.whatsapp = None
        env.gateway_settings = {}
        restart(env)


def post(hook, body, sig=None, omit=False):
    headers = {"Content-Type": "application/json"}
    if not omit:
        headers["X-Hub-Signature-256"] = sig if sig is not None else signature(APP_SECRET, body)
    return requests.post(hook, data=body, headers=headers, timeout=30)


def channel_counts(wa):
    """threshold_channel_messages_total by (channel, direction); the whole exposition."""
    r = requests.get(wa["metrics"], timeout=10)
    assert r.status_code == 200, r.text
    samples = parse(r.text)[0]
    return {(c, d): value(samples, "threshold_channel_messages_total", channel=c, direction=d)
            for c in ("sms", "whatsapp") for d in ("in", "out")}, r.text


def messages_sent(meta):
    with meta.lock:
        return len(meta.sent)


class Person:
    def __init__(self, hook, number):
        self.hook, self.number, self.n = hook, number, 0

    def says(self, text, ts=None):
        self.n += 1
        mid = "wamid.%s.%d" % (self.number[-3:], self.n)
        r = post(self.hook, message(PNID, self.number, mid, text=text, ts=ts))
        assert r.status_code == 200 and r.text == "", (r.status_code, r.text)
        return mid


def waiting_room(env, staff_room, seen=(), timeout=30):
    async def find():
        async with Client.for_user(env, "staff") as s:
            async def notice():
                for ev in reversed(await s.history(staff_room)):
                    body = ev.get("content", {}).get("body", "")
                    if (ev.get("sender") == env.bot and "(by WhatsApp) is waiting" in body
                            and body not in seen):
                        return body
                return None
            return await poll(notice, timeout=timeout, what="the staff room's waiting notice")
    body = run(find())
    return body, body.rsplit("/#/", 1)[1].strip()


def join(env, room):
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, urllib.parse.quote(room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text


def history(env, room):
    async def read():
        async with Client.for_user(env, "staff") as s:
            return await s.history(room)
    return run(read())


def open_conversation(env, wa, person, ts=None):
    """Menu, notice, YES; returns (guest, room)."""
    meta = wa["meta"]
    person.says("hello, I need some help")
    meta.wait_text(person.number, "1 English / 2 Fran")
    person.says("1")
    meta.wait_text(person.number, NOTICE_EN)
    consent_before = len(audit_records(env.threshold, "consent_recorded"))
    person.says("YES", ts=ts)
    meta.wait_text(person.number, "Your messages now reach the team")
    consent = [r for r in audit_records(env.threshold, "consent_recorded")
               if r.get("details", {}).get("entry") == "whatsapp"]
    assert len(audit_records(env.threshold, "consent_recorded")) == consent_before + 1
    return consent[-1]["subject"]


def test_webhook_handshake_and_signatures(env, threshold, wa):
    hook, meta = wa["hook"], wa["meta"]
    q = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    r = requests.get(hook, params=q, timeout=10)
    assert r.status_code == 200 and r.text == "1158201444"
    assert requests.get(hook, params=dict(q, **{"hub.verify_token": "wrong"}), timeout=10).status_code == 403
    assert requests.get(hook, params=dict(q, **{"hub.mode": "unsubscribe"}), timeout=10).status_code == 403

    body = message(PNID, "447700900999", "wamid.sig.1", text="hello")
    assert post(hook, body, omit=True).status_code == 403
    assert post(hook, body, sig="sha256=" + "0" * 64).status_code == 403
    assert post(hook, body, sig=signature("another-secret", body)).status_code == 403
    tampered = body.replace(b"hello", b"hellO")
    assert post(hook, tampered, sig=signature(APP_SECRET, body)).status_code == 403
    time.sleep(1)
    assert meta.texts_to("447700900999") == []  # nothing refused was answered
    # good: answered 200 with nothing; the menu goes by the Graph API
    r = post(hook, body)
    assert r.status_code == 200 and r.text == ""
    meta.wait_text("447700900999", "1 English")
    sent = [s for s in meta.sent if s["json"].get("to") == "447700900999"]
    assert sent[0]["path"] == "/v21.0/%s/messages" % PNID
    assert sent[0]["json"]["messaging_product"] == "whatsapp" and sent[0]["json"]["type"] == "text"
    # Meta retries: the same message id again is processed once
    assert post(hook, body).status_code == 200
    time.sleep(1.5)
    assert len(meta.texts_to("447700900999")) == 1, meta.texts_to("447700900999")
    # over the body cap before it is read
    r = requests.post(hook, data=b"{" + b" " * 70000 + b"}", timeout=10,
                      headers={"X-Hub-Signature-256": "sha256=00"})
    assert r.status_code == 413
    # statuses out of order: each accepted, the furthest kept
    for st in ("read", "delivered", "sent", "read"):
        assert post(hook, status(PNID, "wamid.fake0001", st, "447700900999")).status_code == 200
    assert "status delivered came after a later one" in threshold.log_since_start()
    assert "status sent came after a later one" in threshold.log_since_start()
    assert "447700900999" not in threshold.log_since_start()


def test_whatsapp_end_to_end(env, threshold, wa):
    hook, meta, staff_room = wa["hook"], wa["meta"], wa["staff_room"]
    counts_before, _ = channel_counts(wa)
    sent_before = messages_sent(meta)
    person = Person(hook, PHONE)
    guest = open_conversation(env, wa, person)
    body, room = waiting_room(env, staff_room)
    assert PHONE not in body
    join(env, room)
    meta.wait_text(PHONE, GREETING)  # from the feed, by the Graph API

    # the person's words reach staff as the guest
    person.says("my words for the staff")

    async def words():
        async with Client.for_user(env, "staff") as s:
            async def seen():
                return [e for e in await s.history(room) if e.get("sender") == guest
                        and e.get("content", {}).get("body") == "my words for the staff"] or None
            await poll(seen, timeout=30, what="the guest's words in the room")
    run(words())
    assert not [e for e in history(env, room) if "I need some help" in e.get("content", {}).get("body", "")]

    # staff's reply goes out by the Graph API
    t0 = time.monotonic()
    staff_says(env, room, "Hello from the staff, how can we help?")
    meta.wait_text(PHONE, "Hello from the staff, how can we help?")
    print("staff reply reached the fake Graph API in %.2f s" % (time.monotonic() - t0))
    out = [s for s in meta.sent if "Hello from the staff" in s["json"].get("text", {}).get("body", "")][0]
    assert out["path"] == "/v21.0/%s/messages" % PNID and out["json"]["to"] == PHONE

    # a picture with EXIF GPS reaches staff without it
    jpeg = _jpeg_with_exif()
    assert b"secret" in jpeg
    meta.media["1209837423"] = (jpeg, "image/jpeg")
    person.n += 1
    r = post(hook, message(PNID, PHONE, "wamid.777.pic", image={"id": "1209837423", "mime_type": "image/jpeg",
                                                               "sha256": "x", "caption": "where I am"}))
    assert r.status_code == 200

    async def picture():
        async with Client.for_user(env, "staff") as s:
            async def seen():
                return [e for e in await s.history(room) if e.get("sender") == guest
                        and e.get("content", {}).get("msgtype") == "m.image"] or None
            return (await poll(seen, timeout=30, what="the guest's picture in the room"))[0]
    ev = run(picture())
    server, media_id = ev["content"]["url"][len("mxc://"):].split("/", 1)
    r = requests.get("%s/_matrix/client/v1/media/download/%s/%s" % (env.hs_url, server, media_id),
                     headers=bearer(env.token("staff")), timeout=30)
    assert r.status_code == 200, r.text
    for marker in (b"secret", b"51.5N", b"Exif", b"xmpmeta"):
        assert marker not in r.content, marker
    assert not [m for m in jpeg_markers(r.content) if 0xE1 <= m <= 0xEF or m == 0xFE]
    assert meta.fetched == ["1209837423"]

    async def caption():
        async with Client.for_user(env, "staff") as s:
            async def seen():
                return [e for e in await s.history(room) if e.get("sender") == guest
                        and e.get("content", {}).get("body") == "where I am"] or None
            await poll(seen, timeout=30, what="the picture's caption in the room")
    run(caption())

    # a picture staff send reaches the fake as an upload, then a media message
    async def staff_picture():
        async with Client.for_user(env, "staff") as s:
            await s.send_file(room, base64.b64decode(JPEG_16X8), "photo.jpg", "image/jpeg", msgtype="m.image")
    run(staff_picture())
    deadline = time.monotonic() + 30
    while not meta.images_to(PHONE) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(meta.uploads) == 1, (meta.uploads, meta.sent[-3:])
    up = meta.uploads[0]
    assert up["path"] == "/v21.0/%s/media" % PNID
    assert up["fields"] == {"messaging_product": "whatsapp", "type": "image/jpeg"}
    assert up["file_type"] == "image/jpeg" and up["file"].startswith(b"\xff\xd8\xff")
    assert meta.images_to(PHONE) == [{"id": "90%014d" % 1}]
    assert not [t for t in meta.texts_to(PHONE) if "cannot be shown" in t]

    # STOP ends it, with a plain confirmation by the Graph API
    person.says("STOP")
    meta.wait_text(PHONE, "This conversation has ended")
    assert audit_records(threshold, "consent_withdrawn", subject=guest)
    # DELETE erases it: confirmation, on the record
    person.says("DELETE")
    meta.wait_text(PHONE, "are being erased")
    deadline = time.monotonic() + 30
    while not audit_records(threshold, "data_erased", subject=guest) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert audit_records(threshold, "data_erased", subject=guest)

    # counted as WhatsApp, in and out, exactly: each message taken in once
    # (hello, 1, YES, words, picture, STOP, DELETE), each message the Graph
    # API accepted (menu, notice, confirmations, greeting, reply, picture);
    # nothing counted as SMS, no number or id in a label
    deadline = time.monotonic() + 10
    while True:
        counts, text = channel_counts(wa)
        out = counts[("whatsapp", "out")] - counts_before[("whatsapp", "out")]
        if out == messages_sent(meta) - sent_before or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts[("whatsapp", "in")] - counts_before[("whatsapp", "in")] == 7, (counts_before, counts)
    assert out == messages_sent(meta) - sent_before >= 7, (counts_before, counts, messages_sent(meta))
    assert counts[("sms", "in")] == counts_before[("sms", "in")]
    assert counts[("sms", "out")] == counts_before[("sms", "out")]
    for secret in (PHONE, PNID, guest, room, "wamid"):
        assert secret not in text, secret

    # the number is nowhere in clear
    needle = PHONE.encode()
    files = glob.glob(os.path.join(env.hs.host_dir, "homeserver.db*"))
    assert files
    files += [threshold.log_path] + glob.glob(os.path.join(env.store_path, "**"), recursive=True)
    for path in filter(os.path.isfile, files):
        with open(path, "rb") as f:
            assert needle not in f.read(), "the number is in %s" % path


def test_window_shut_template_then_held_words(env, threshold, wa):
    """YES arrives as a message sent 25 hours ago (Meta retried it late): the
    window is shut, so the greeting and staff's words wait in the feed, one
    template (the configured, content-free one) invites the person back, and
    when they write again everything that waited goes out."""
    hook, meta, staff_room = wa["hook"], wa["meta"], wa["staff_room"]
    seen = {e.get("content", {}).get("body", "") for e in history(env, staff_room)}
    person = Person(hook, PHONE2)
    open_conversation(env, wa, person, ts=time.time() - 25 * 3600)
    _, room = waiting_room(env, staff_room, seen=seen)
    join(env, room)
    deadline = time.monotonic() + 30
    while not meta.templates_to(PHONE2) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert meta.templates_to(PHONE2) == [{"name": TEMPLATE, "language": {"code": "en"}}]
    staff_says(env, room, "We are here when you are ready.")
    time.sleep(4)  # the sender has had two rounds
    texts = meta.texts_to(PHONE2)
    assert not [t for t in texts if GREETING in t or "when you are ready" in t], texts
    assert len(meta.templates_to(PHONE2)) == 1  # invited once, not once a round
    # the person writes again: the window opens, what waited goes out
    person.says("hi, I am back")
    meta.wait_text(PHONE2, "We are here when you are ready.")
    meta.wait_text(PHONE2, GREETING)
    assert len(meta.templates_to(PHONE2)) == 1


def test_doctor_asks_the_graph_api(env, threshold, wa, scratch):
    """threshold doctor asks the Graph API for each service's phone number id
    with the token: known is fine; a refused token or no answer is named
    with its fix."""
    out = findings(doctor(env))
    assert status_of(out, "whatsapp") == {"ok"}, json.dumps(out, indent=1)

    def bad_token(cfg, d):
        cfg["whatsapp"]["access_token_file"] = secret_file(d, "other-token", "EAAG-revoked")
    out = findings(doctor(env, config_copy(env, scratch, bad_token)))
    assert "whatsapp" in attention(out)
    assert [f for f in out["findings"] if f["check"] == "whatsapp" and "refused the access token" in f["message"]], \
        json.dumps(out, indent=1)

    def no_graph(cfg, d):
        cfg["whatsapp"]["graph_url"] = "http://127.0.0.1:%d" % harness.free_port()
    out = findings(doctor(env, config_copy(env, scratch, no_graph)))
    assert "whatsapp" in attention(out)
    assert ACCESS_TOKEN not in json.dumps(out)


def test_webhook_answers_at_once_and_a_crash_loses_nothing(env, threshold, wa):
    """Meta is answered 200 at once while a picture's download is held for
    seconds: the message was recorded (sealed, with its dedupe mark) and a
    worker handles it.  It reaches staff once; killed while the download is
    held, Threshold handles it after the restart, still once; Meta's retry
    is not handled again."""
    hook, meta, staff_room = wa["hook"], wa["meta"], wa["staff_room"]
    number = "447700900779"
    seen = {e.get("content", {}).get("body", "") for e in history(env, staff_room)}
    person = Person(hook, number)
    guest = open_conversation(env, wa, person)
    _, room = waiting_room(env, staff_room, seen=seen)
    join(env, room)

    def pictures(caption):
        evs = [e for e in history(env, room) if e.get("sender") == guest]
        return ([e for e in evs if e.get("content", {}).get("msgtype") == "m.image"],
                [e for e in evs if e.get("content", {}).get("body") == caption])

    def wait_pictures(n, caption, timeout=40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            imgs, caps = pictures(caption)
            if len(imgs) >= n and caps:
                return imgs, caps
            time.sleep(0.5)
        raise AssertionError("the picture never reached staff: %r" % (pictures(caption),))

    # 1. the download is held 6 s: Meta's webhook is answered at once
    meta.hold = 6
    meta.media["5550001"] = (base64.b64decode(JPEG_16X8), "image/jpeg")
    body = message(PNID, number, "wamid.779.slow", image={"id": "5550001", "mime_type": "image/jpeg",
                                                          "sha256": "x", "caption": "slow one"})
    t0 = time.monotonic()
    r = post(hook, body)
    answered = time.monotonic() - t0
    print("webhook answered in %.3f s with the download held %d s" % (answered, meta.hold))
    assert r.status_code == 200 and r.text == ""
    assert answered < 1.0, answered
    assert post(hook, body).status_code == 200  # Meta's retry while it is being handled
    imgs, caps = wait_pictures(1, "slow one")
    time.sleep(2)
    imgs, caps = pictures("slow one")
    assert len(imgs) == 1 and len(caps) == 1, (imgs, caps)
    assert meta.asked.count("5550001") == 1

    # 2. killed while the download is held: recorded, so handled after the restart, once
    meta.hold = 30
    meta.media["5550002"] = (base64.b64decode(JPEG_16X8), "image/jpeg")
    body = message(PNID, number, "wamid.779.crash", image={"id": "5550002", "mime_type": "image/jpeg",
                                                           "sha256": "x", "caption": "after a crash"})
    t0 = time.monotonic()
    r = post(hook, body)
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    deadline = time.monotonic() + 10
    while "5550002" not in meta.asked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "5550002" in meta.asked
    threshold.kill()
    meta.hold = 0
    assert pictures("after a crash")[1] == []  # not handled before the kill
    threshold.start()
    imgs, caps = wait_pictures(2, "after a crash")
    assert post(hook, body).status_code == 200  # Meta retries what it thinks was lost
    time.sleep(3)
    imgs, caps = pictures("after a crash")
    assert len(imgs) == 2 and len(caps) == 1, (imgs, caps)
    assert meta.asked.count("5550002") == 2  # asked again after the restart, passed on once

    # the recorded message never left the number in clear in the store
    for path in filter(os.path.isfile, glob.glob(os.path.join(env.store_path, "**"), recursive=True)):
        with open(path, "rb") as f:
            assert number.encode() not in f.read(), "the number is in %s" % path
