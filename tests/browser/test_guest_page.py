"""The guest web page in a real browser, against the real gateway and Synapse.

Debian's Chromium is driven through tests/browser/driver.mjs (playwright-core);
the staff side is a matrix-nio client, as in tests/integration.  Each screen
is checked with axe-core (no violation at any impact level) and saved as a
screenshot for docs/guest-experience.md (see conftest.py: `shots`).
"""

import base64
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import requests

from conftest import SOURCE_DIR
from helpers import bearer, q

SECRET_HTML = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def js(value):
    return json.dumps(value)


def no_problems(b, allow=()):
    """No page error, console error (a CSP refusal is one) or foreign request.

    Chromium logs every HTTP error answer as a console error; the API's 4xx
    answers (an unknown invitation, a wrong code) are expected, so those lines
    alone are let through."""
    problems = [p for p in b.call("problems")
                if not (p["kind"] == "console" and p["text"].startswith(
                    "Failed to load resource: the server responded with a status of 4"))
                and not any(a in p["text"] for a in allow)]
    assert problems == [], problems


def check_axe(b, where):
    bad = b.call("axe")
    assert bad == [], "axe on %s: %s" % (where, json.dumps(bad, indent=1))


def screen(b, name, shots, where=None):
    """The screen `name` is showing: axe passes, it has a title, Quick exit is
    on screen, every target is at least 44 px, and a screenshot is kept."""
    b.wait("#s-%s h1" % name)
    check_axe(b, where or name)
    assert b.eval("document.title.trim()"), "no title on %s" % name
    assert b.eval("!document.getElementById('exit').hidden"), "no Quick exit on %s" % name
    assert in_view(b, "#exit") == [], name
    assert b.eval(SMALL) == [], (name, b.eval(SMALL))
    if shots is not None and where:
        shots(b, where)


def tab_to(b, selector, limit=25):
    """Press Tab until the focus is on `selector`; the focus must be visible."""
    for i in range(limit):
        if i or not b.eval("document.activeElement.matches(%s)" % js(selector)):
            b.press("Tab")
        if b.eval("document.activeElement.matches(%s)" % js(selector)):
            outline = b.eval("getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), "no visible focus on %s" % selector
            return
    raise AssertionError("Tab never reached %s (focus on %s)" % (
        selector, b.eval("document.activeElement.outerHTML.slice(0, 120)")))


def open_link(b, url):
    b.goto(url)
    # The token leaves the address bar (and so the history) at once.
    b.wait_js("!location.hash")
    assert "#" not in b.call("url")


def choose_language(b, code):
    b.wait("#s-lang h1")
    b.click("#lang-list button[lang=%s]" % code)
    b.wait_js("document.documentElement.lang === %s" % js(code))


def to_chat(b, gw, code="en", keep=False, shots=None, prefix=""):
    """From a fresh invitation to the chat screen; returns the pseudonym."""
    open_link(b, gw.invite_link())
    if shots is not None and prefix is not None:
        screen(b, "lang", shots, prefix + "1-language")
    choose_language(b, code)
    screen(b, "notice", shots, prefix + "2-notice" if prefix is not None else None)
    assert b.eval("document.title") == gw.page_title
    assert b.text("#n-text").strip(), "the notice is empty"
    b.click("#n-agree")
    screen(b, "welcome", shots, prefix + "3-welcome" if prefix is not None else None)
    name = b.eval("document.getElementById('w-title').textContent")
    if keep:
        b.click("#w-keep")
    b.click("#w-go")
    b.wait("#s-chat h1")
    pseudonym = b.eval("JSON.parse(sessionStorage.getItem('g.s') || localStorage.getItem('g.s'))"
                       ".pseudonym")
    assert pseudonym and pseudonym in name, (name, pseudonym)
    assert pseudonym in b.text("#c-me")
    b.wait_js("/./.test(document.getElementById('c-status').textContent)")
    return pseudonym


def send(b, text):
    b.fill("#c-text", text)
    b.click("#c-form button[type=submit]")
    b.wait_js("[...document.querySelectorAll('.msg.self')].some(m => m.querySelector('.body')"
              ".textContent === %s && m.querySelector('.state.sent'))" % js(text), timeout=60000)


def test_whole_flow_in_arabic(gw, browser, shots):
    """Link -> Arabic (rtl) -> notice -> consent -> pseudonym -> chat with staff, at 360x640."""
    b = browser(width=360, height=640)
    pseudonym = to_chat(b, gw, "ar", shots=shots, prefix="ar-")
    assert b.eval("document.documentElement.dir") == "rtl"
    # Mirrored: Quick exit sits at the inline end, which is the left in Arabic.
    assert b.eval("document.getElementById('exit').getBoundingClientRect().left"
                  " < document.getElementById('bar-title').getBoundingClientRect().left")

    text = "مرحبا، أحتاج إلى مساعدة"
    send(b, text)
    room, _event = gw.staff_sees(pseudonym, text)
    gw.staff_says(room, "Hello, I'm here. How can I help?")
    b.wait_js("[...document.querySelectorAll('.msg.staff .body')]"
              ".some(e => e.textContent === \"Hello, I'm here. How can I help?\")", timeout=60000)
    who = b.eval("document.querySelector('.msg.staff .who').textContent")
    assert who and who != pseudonym, who
    assert "How can I help?" in b.text("#live"), "the live region did not announce the reply"
    screen(b, "chat", shots, "ar-4-chat")

    # 320 CSS px wide, and a 1280x720 window at 200% zoom: no sideways scrolling.
    for width, height in ((320, 640), (640, 360)):
        b.call("viewport", width=width, height=height)
        assert b.eval("document.documentElement.scrollWidth") <= width, (width, height)
        assert b.eval("document.getElementById('c-text').getBoundingClientRect().width") > 150
    no_problems(b)


def test_staff_html_is_shown_as_text(gw, browser, shots):
    """A staff message with <script> and <img onerror> is literal text and runs nothing."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "hello")
    room, _ = gw.staff_sees(pseudonym, "hello")
    gw.staff_says(room, SECRET_HTML)
    b.wait_js("[...document.querySelectorAll('.msg.staff .body')]"
              ".some(e => e.textContent === %s)" % js(SECRET_HTML), timeout=60000)
    assert b.eval("window.__pwned === undefined")
    assert b.eval("document.querySelectorAll('#c-msgs img, #c-msgs script').length") == 0
    no_problems(b)


def test_message_taken_down_by_staff(gw, browser, shots):
    """Staff remove a message in Element: the page stops showing its words,
    says it was removed, and a reload shows no trace of them either."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "hello")
    room, _ = gw.staff_sees(pseudonym, "hello")
    wrong = gw.staff_says(room, "Meeting with Sam Jones moved to Friday")
    gw.staff_says(room, "Take your time.")
    b.wait_js("[...document.querySelectorAll('.msg.staff .body')]"
              ".some(e => e.textContent === 'Take your time.')", timeout=60000)
    assert "Sam Jones" in b.text("#c-msgs")
    gw.staff_redacts(room, wrong)
    b.wait_js("document.querySelector('.msg.staff.removed')", timeout=60000)
    assert "Sam Jones" not in b.text("#c-msgs")
    assert b.text(".msg.staff.removed .body") == "This message was removed."
    assert "Take your time." in b.text("#c-msgs"), "the other message went too"
    screen(b, "chat", shots)
    b.call("reload")
    b.wait_js("document.querySelector('.msg.staff.removed')", timeout=60000)
    b.wait_js("[...document.querySelectorAll('.msg.staff .body')]"
              ".some(e => e.textContent === 'Take your time.')", timeout=60000)
    assert "Sam Jones" not in b.text("#c-msgs")
    no_problems(b)


def test_quick_exit_leaves_nothing(gw, browser, shots):
    """Quick exit wipes both storages and replaces the page: Back does not show the chat."""
    b = browser()
    b.goto(gw.before_url)
    b.call("set_origin", url=gw.url)
    to_chat(b, gw, "en", keep=True, prefix=None)
    assert b.eval("localStorage.length") > 0, "keep me signed in stored nothing"
    b.click("#exit")
    b.wait_js("location.href === %s" % js(gw.exit_url))
    b.call("back")
    b.wait_js("location.href === %s" % js(gw.before_url))
    assert "c-msgs" not in b.eval("document.documentElement.outerHTML")
    # The page's own storage, seen from its origin in the same tab: empty, and a
    # fresh load starts from the beginning, not in the chat.
    b.goto(gw.url)
    b.wait("#s-lang h1")
    assert b.eval("sessionStorage.length + localStorage.length") == 0
    choose_language(b, "en")
    screen(b, "start", shots, "7-start")
    no_problems(b)


def test_delete_my_data(gw, browser, shots):
    """Delete my data, confirmed: the page forgets; staff see the message gone and the guest left."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", shots=shots, prefix="")
    send(b, "please forget this")
    room, event = gw.staff_sees(pseudonym, "please forget this")
    gw.staff_says(room, "Hello, I'm Sam. Take your time.")
    b.wait_js("document.querySelector('.msg.staff')", timeout=60000)
    screen(b, "chat", shots, "4-chat")
    b.click("#c-menu-open")
    b.wait("#c-menu h2")
    check_axe(b, "options")
    if shots is not None:
        shots(b, "5-options")
    b.click("#c-erase")
    b.wait("#c-confirm-erase h2")
    check_axe(b, "erase confirm")
    if shots is not None:
        shots(b, "5-erase-confirm")
    b.click("#c-erase-yes")
    # "being deleted" until the job is done, then the receipt (without an
    # admin token the job ends "incomplete", and the page says so)
    b.wait_js("!document.getElementById('x-receipt').hidden", timeout=60000)
    screen(b, "closed", shots, "6-erased")
    assert b.text("#x-text") in ("Your data has been deleted.",
                                 "Your messages have been removed from the conversation, but not "
                                 "everything could be deleted yet. The service has been told and will "
                                 "finish it."), b.text("#x-text")
    assert "receipt" in b.text("#x-receipt")
    assert b.eval("sessionStorage.length + localStorage.length") == 0
    gw.staff_sees_erased(room, event)
    no_problems(b)


def test_end_chat_then_delete_my_data(gw, browser, shots):
    """After End chat the closed screen still offers Delete my data; the page
    says "being deleted" until the erasure is done, then shows the receipt;
    staff see the message redacted though the guest had left."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", shots=None, prefix="")
    send(b, "forget this after I go")
    room, event = gw.staff_sees(pseudonym, "forget this after I go")
    b.click("#c-menu-open")
    b.click("#c-leave")
    b.wait("#c-confirm-leave h2")
    assert "deleted" in b.text("#c-confirm-leave")  # the confirmation says it stays possible
    b.click("#c-leave-yes")
    b.wait("#s-closed h1")
    assert b.text("#x-text") == "You ended the chat."
    b.wait("#x-erase")
    b.click("#x-erase")
    b.wait("#x-confirm-erase h2")
    check_axe(b, "erase after end chat")
    b.click("#x-erase-yes")
    b.wait_js("!document.getElementById('x-receipt').hidden", timeout=60000)
    assert "being deleted" not in b.text("#x-text")
    assert b.eval("document.getElementById('x-erase').hidden") is True
    assert "receipt" in b.text("#x-receipt")
    gw.staff_sees_erased(room, event)
    no_problems(b)


def test_offline_message_sent_when_back(gw, browser, shots):
    """Offline: the state shows beside the composer, in words; two messages
    written meanwhile wait ("it will be sent when it is back", nothing to
    press); back online, both arrive once each, in order, by themselves."""
    b = browser(width=320, height=640)
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "first")
    b.call("offline", on=True)
    b.wait_js("/offline/.test(document.getElementById('c-status').textContent)")
    for text in ("while offline", "and again"):
        b.fill("#c-text", text)
        b.click("#c-form button[type=submit]")
    b.wait_js("document.querySelectorAll('.msg.self .state.queued').length === 2")
    assert b.eval("document.querySelector('#c-msgs .retry')") is None
    # The connection's state is on screen, just above the text box.
    st = b.eval("(() => { const s = document.getElementById('c-status').getBoundingClientRect(),"
                " t = document.getElementById('c-text').getBoundingClientRect();"
                " return [s.top, s.bottom, t.top, innerHeight]; })()")
    assert 0 <= st[0] and st[1] <= st[2] and st[2] < st[3], st
    if shots is not None:
        shots(b, "offline")
    b.call("offline", on=False)
    b.wait_js("[...document.querySelectorAll('.msg.self')].every(m => m.querySelector('.state.sent'))",
              timeout=60000)
    room = gw.portal(pseudonym)
    gw.staff_sees(pseudonym, "and again")
    bodies = [ev.get("content", {}).get("body") for ev in gw.history(room)]
    assert bodies.count("while offline") == 1 and bodies.count("and again") == 1, bodies
    assert bodies.index("while offline") < bodies.index("and again"), bodies  # oldest first
    no_problems(b, allow=("ERR_INTERNET_DISCONNECTED",))


def test_countdown_and_closed_chat(gw, browser, shots):
    """The feed failing: "Trying again in N seconds" counts down a second at
    a time, beside the composer.  Staff close the chat: no composer, no Try
    again, no End chat: nothing offered that cannot work."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "hello")
    room, _ = gw.staff_sees(pseudonym, "hello")
    # The network half-broken (the feed's requests fail, as behind a bad
    # proxy); the page's own fetch is wrapped from outside, which the CSP allows.
    b.eval("(() => { const f = window.fetch; window.__f = f; window.fetch = (u, o) =>"
           " /feed/.test(u) ? Promise.reject(new TypeError('down')) : f(u, o); })()")
    b.call("offline", on=True)   # the poll in flight is dropped ...
    b.call("offline", on=False)  # ... and the next ones fail: backoff, 1, 2, 4, 8 s
    readings = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        m = re.search(r"in (\d+) seconds", b.text("#c-status"))
        if m and (not readings or readings[-1] != int(m.group(1))):
            readings.append(int(m.group(1)))
        if any(x - y == 1 for x, y in zip(readings, readings[1:])):
            break
        time.sleep(0.25)
    assert any(x - y == 1 for x, y in zip(readings, readings[1:])), \
        "no countdown, only %s" % readings
    b.eval("window.fetch = window.__f")
    b.wait_js("/Connected/.test(document.getElementById('c-status').textContent)", timeout=60000)
    gw.staff_says(room, "!threshold close")
    b.wait_js("/ended/.test(document.getElementById('c-status').textContent)", timeout=60000)
    assert b.eval("document.getElementById('c-compose').hidden")
    assert b.eval("document.querySelector('#c-msgs .retry')") is None
    assert b.eval("document.getElementById('c-leave').hidden")
    check_axe(b, "chat closed by staff")
    no_problems(b, allow=("ERR_INTERNET_DISCONNECTED",))


def tiny_png(width=4, height=4):
    """A real PNG (RGB, a red square), made here: signature, IHDR, IDAT, IEND."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\x00" + b"\xd0\x20\x20" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def choose_file(b, name, mime, data):
    b.call("files", selector="#c-file",
           files=[{"name": name, "mime": mime, "b64": base64.b64encode(data).decode()}])
    b.wait_js("document.getElementById('c-chosen-name').textContent === %s" % js(name))


def test_send_a_picture_and_a_refused_file(gw, browser, shots):
    """A PNG chosen with the file control and sent: it shows as sent, staff see
    an m.image from the guest's pseudonym, and the page keeps nothing of it.
    A .txt file is refused with the page's own words."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", prefix=None)
    tab_to(b, "#c-file")  # keyboard reachable, with a visible focus on its label
    assert b.eval("getComputedStyle(document.querySelector('label[for=c-file]')).outlineStyle") \
        not in ("none", "")
    assert b.eval("document.querySelector('label[for=c-file]').textContent") == "Send a picture or file"
    # PDFs are off (gateway.accept_pdf): photos and pictures only.
    assert b.eval("document.getElementById('c-file').accept") == "image/jpeg,image/png,image/webp"
    assert "(JPEG, PNG, WebP)." in b.text("#c-file-hint")

    choose_file(b, "red square.png", "image/png", tiny_png())
    check_axe(b, "chat with a file chosen")
    b.click("#c-form button[type=submit]")
    b.wait_js("[...document.querySelectorAll('.msg.self.file')].some(m => m.querySelector('.body')"
              ".textContent.includes('red square.png') && m.querySelector('.state.sent'))",
              timeout=60000)
    assert b.eval("document.getElementById('c-file').files.length") == 0
    assert b.eval("document.getElementById('c-chosen').hidden")
    # Nothing of the file stays: no storage but the session and language, no
    # object URL or preview in the page.
    assert b.eval("Object.keys(sessionStorage).sort().join() + '|' + localStorage.length") == "g.l,g.s|0"
    assert "red square" not in b.eval("JSON.stringify(sessionStorage)")
    assert "blob:" not in b.eval("document.getElementById('main').outerHTML")
    assert b.eval("document.querySelectorAll('#c-msgs img').length") == 0

    room = gw.portal(pseudonym)
    deadline = time.monotonic() + 60
    while True:
        pics = [ev for ev in gw.history(room) if ev.get("content", {}).get("msgtype") == "m.image"]
        if pics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pics, "staff never saw the picture"
    ev = pics[-1]
    assert ev["sender"].startswith("@guest_"), ev
    assert ev["content"].get("url", "").startswith("mxc://"), ev
    assert ev["content"].get("info", {}).get("mimetype") == "image/png", ev
    # Named by what it is, never by the name it had on the phone.
    assert ev["content"].get("body") == "Picture 1.png", ev
    assert "red square" not in json.dumps(gw.history(room))
    # The sender's display name is the pseudonym.
    prof = requests.get("%s/_matrix/client/v3/profile/%s" % (gw.env.hs_url, q(ev["sender"])),
                        headers=bearer(gw.env.token("staff")), timeout=30).json()
    assert prof.get("displayname") == pseudonym, (prof, pseudonym)

    # A text file: the gateway refuses it (415) and the page says why, in words.
    choose_file(b, "notes.txt", "text/plain", b"just some words\n")
    b.click("#c-form button[type=submit]")
    b.wait(".msg.self.file .state.failed")
    refused = b.text(".msg.self.file:last-child .state")
    assert "this kind of file cannot be sent here" in refused, refused
    assert b.eval("document.querySelector('.msg.self.file:last-child .retry')") is None
    assert "this kind of file cannot be sent here" in b.text("#live")
    check_axe(b, "chat with a refused file")
    if shots is not None:
        shots(b, "file-refused")

    # Over gateway.max_upload_bytes: the page says so itself and sends nothing.
    limit = b.eval("fetch('/_threshold/gateway/v1/page').then(r => r.json()).then(p => p.max_upload_bytes)")
    assert limit == 4 * 1024 * 1024, limit
    uploads = b.call("requests").count("POST /_threshold/gateway/v1/upload")
    assert uploads == 2, b.call("requests")  # the picture and the text file
    choose_file(b, "huge photo.png", "image/png", tiny_png() + b"\0" * (limit + 1 - len(tiny_png())))
    b.click("#c-form button[type=submit]")
    b.wait_js("[...document.querySelectorAll('.msg.self.file')].some(m => m.querySelector('.body')"
              ".textContent.includes('huge photo.png') && m.querySelector('.state.failed'))")
    assert "too big" in b.text(".msg.self.file:last-child .state"), b.text(".msg.self.file:last-child")
    assert b.call("requests").count("POST /_threshold/gateway/v1/upload") == uploads, \
        "the page sent a file it knew was too big"
    no_problems(b)


LEAFLET = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
           b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


def test_staff_picture_and_file(gw, browser, shots):
    """Staff send a picture and a PDF from Matrix: the picture shows in the
    chat by itself, an <img> from a blob: URL with its name as the alt text;
    the file is a Download button, with the note that a download stays on
    the device, and saves the file byte for byte; ending the chat revokes
    the object URLs."""
    b = browser()
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "could you send me the map and the leaflet?")
    room, _ = gw.staff_sees(pseudonym, "could you send me the map and the leaflet?")
    gw.staff_sends_file(room, tiny_png(160, 100), "map of the area.png", "image/png", "m.image")
    gw.staff_sends_file(room, LEAFLET, "leaflet.pdf", "application/pdf")

    b.wait_js("document.querySelector('#c-msgs .msg.staff .att img')", timeout=60000)
    img = b.eval("(() => { const i = document.querySelector('#c-msgs .msg.staff .att img');"
                 " return {src: i.src, alt: i.alt}; })()")
    assert img["src"].startswith("blob:" + gw.url.rstrip("/")), img
    assert img["alt"] == "map of the area.png", img
    b.wait_js("(() => { const i = document.querySelector('#c-msgs .att img');"
              " return i.complete && i.naturalWidth === 160 && i.naturalHeight === 100; })()")
    b.wait("#c-msgs .msg.staff .att-file")
    label = b.text("#c-msgs .att-file")
    assert label.startswith("Download leaflet.pdf") and "(" in label, label
    assert "stays on this device" in b.text("#c-msgs .att .hint")
    assert b.eval("document.querySelectorAll('#c-msgs .att-file').length") == 1
    assert "sent a picture: map of the area.png" in b.text("#live")
    check_axe(b, "chat with a picture and a file from staff")
    if shots is not None:
        b.eval("document.querySelector('#c-msgs .msg.staff .att img').closest('li')"
               ".scrollIntoView({block: 'start'})")
        shots(b, "staff-media")
    got = b.call("click_download", selector="#c-msgs .att-file")
    assert got["name"] == "leaflet.pdf", got["name"]
    assert base64.b64decode(got["b64"]) == LEAFLET
    # Nothing of it in storage.
    assert b.eval("Object.keys(sessionStorage).sort().join() + '|' + localStorage.length") == "g.l,g.s|0"
    no_problems(b)

    b.click("#c-menu-open")
    b.click("#c-leave")
    b.click("#c-leave-yes")
    b.wait("#s-closed h1")
    gone = b.eval("new Promise(r => { const i = new Image(); i.onload = () => r('alive');"
                  " i.onerror = () => r('revoked'); i.src = %s; })" % js(img["src"]))
    assert gone == "revoked", gone
    no_problems(b, allow=("ERR_FILE_NOT_FOUND",))


def test_resume_on_another_device(gw, browser, shots):
    """The code shown at the start continues the same conversation elsewhere
    (the second device prefers a dark colour scheme: axe checks it too)."""
    a = browser()
    pseudonym = to_chat(a, gw, "en", prefix=None)
    send(a, "written on the first device")
    code = a.eval("JSON.parse(sessionStorage.getItem('g.s')).resume_code")
    assert code and code in a.text("#c-code"), code
    b = browser(scheme="dark")
    b.goto(gw.url)
    choose_language(b, "en")
    screen(b, "start", None)
    b.click("#s-start .to-resume")
    b.wait("#s-resume h1")
    b.fill("#r-code", code.lower())
    b.click("#r-form button[type=submit]")
    b.wait("#s-chat h1")
    b.wait_js("[...document.querySelectorAll('.msg.self .body')]"
              ".some(e => e.textContent === 'written on the first device')", timeout=60000)
    assert pseudonym in b.text("#c-me")
    assert b.text("#c-service") == "Test Helpline"
    # The code worked once: the new device shows its replacement ...
    new_code = b.eval("JSON.parse(sessionStorage.getItem('g.s')).resume_code")
    assert new_code and new_code != code and new_code in b.text("#c-code"), (code, new_code)
    # ... and the first device, still in the conversation, is told, and
    # stops showing the code that no longer works.
    a.wait_js("[...document.querySelectorAll('#c-msgs .msg')]"
              ".some(e => e.textContent.includes('continued on another device'))", timeout=60000)
    a.wait_js("document.getElementById('c-code-box').hidden")
    assert code not in a.text("#c-code")
    send(a, "still here on the first device")
    b.wait_js("[...document.querySelectorAll('.msg.self .body')]"
              ".some(e => e.textContent === 'still here on the first device')", timeout=60000)
    b.wait_js("getComputedStyle(document.body).backgroundColor === 'rgb(21, 21, 21)'")
    check_axe(b, "chat, dark")
    no_problems(a)
    no_problems(b)


def test_keyboard_only(gw, browser, shots):
    """The whole page by keyboard: Tab, Enter, Space, typing, and Esc twice to leave."""
    b = browser()
    open_link(b, gw.invite_link())
    b.wait("#s-lang h1")
    tab_to(b, "#lang-list button[lang=en]")
    b.press("Enter")
    b.wait("#s-notice h1")
    tab_to(b, "#n-agree")
    b.press("Enter")
    b.wait("#s-welcome h1")
    tab_to(b, "#w-go")
    b.press("Enter")
    b.wait("#s-chat h1")
    tab_to(b, "#c-text")
    b.call("type", text="typed, not clicked")
    tab_to(b, "#c-form button[type=submit]")
    b.press("Enter")
    b.wait_js("document.querySelector('.msg.self .state.sent')", timeout=60000)
    tab_to(b, "#c-menu-open")
    b.press("Enter")
    b.wait_js("document.activeElement.matches('#c-menu h2')")
    tab_to(b, "#c-leave")
    b.press("Enter")
    b.wait_js("document.activeElement.matches('#c-confirm-leave h2')")
    b.press("Escape")  # one Esc closes the confirm step, back to Options
    b.wait_js("!document.getElementById('c-confirm-leave').open")
    b.wait_js("document.activeElement.matches('#c-menu-open')")
    b.eval("new Promise(r => setTimeout(r, 1600))")  # not a second Esc: that is Quick exit
    b.press("Enter")
    tab_to(b, "#c-leave")
    b.press("Space")
    tab_to(b, "#c-leave-yes")
    b.press("Enter")
    b.wait("#s-closed h1")
    assert "ended" in b.text("#x-text")
    b.press("Escape", times=2, delay=100)
    b.wait_js("location.href === %s" % js(gw.exit_url))
    no_problems(b)


def test_shift_three_times_exits(gw, browser):
    """GOV.UK's pattern for a keyboard with no Esc key: Shift pressed three
    times within a second and a half leaves, on any screen; twice does not."""
    b = browser()
    open_link(b, gw.url + "#invite=not-a-real-invitation")
    choose_language(b, "en")
    b.press("Shift", times=2, delay=100)
    b.eval("new Promise(r => setTimeout(r, 1600))")
    b.press("Shift")  # the earlier two are too old to count
    b.eval("new Promise(r => setTimeout(r, 300))")
    assert b.eval("location.href") != gw.exit_url
    b.press("Shift", times=2, delay=100)
    b.wait_js("location.href === %s" % js(gw.exit_url))


def test_other_screens(gw, browser, shots):
    """A used-up or unknown link, a wrong code, declining the notice, a public entry link."""
    b = browser()
    open_link(b, gw.url + "#invite=not-a-real-invitation")
    choose_language(b, "en")
    screen(b, "invalid", shots, "8-invalid-link")
    if b.eval("!document.querySelector('#s-invalid .to-resume').hidden"):
        b.click("#s-invalid .to-resume")
        screen(b, "resume", shots)
        b.fill("#r-code", "AAAA-BBBB-CCCC-DDDD")
        b.click("#r-form button[type=submit]")
        b.wait_js("document.getElementById('r-error').textContent.length > 0")
        check_axe(b, "resume with an error")
        if shots is not None:
            shots(b, "9-resume")

    link = gw.invite_link()
    open_link(b, link)
    b.wait("#s-notice h1")  # the language is remembered for the session
    b.click("#n-decline")
    screen(b, "closed", shots)
    assert b.eval("sessionStorage.getItem('g.e')") is None
    # The link was bound to that tab's claim when it opened, and declining
    # forgot the claim: the same link opened again finds it taken.
    open_link(b, link)
    screen(b, "invalid", None)

    # A service's public entry link opens the same notice.
    open_link(b, gw.url + "#service=helpline")
    b.wait("#s-notice h1")
    assert b.text("#n-service") == "Test Helpline"
    no_problems(b)


def test_language_screen_in_the_browser_language(gw, browser, shots):
    """A phone set to Arabic: the language screen itself, heading and Quick
    exit, is in Arabic and right to left, before anything is chosen."""
    b = browser(locale="ar")
    open_link(b, gw.invite_link())
    screen(b, "lang", None)
    assert b.text("#s-lang h1") == "اختر لغتك"
    assert b.text("#exit") == "خروج سريع"
    assert b.eval("document.documentElement.dir") == "rtl"
    no_problems(b)


def test_error_screen(gw, browser, shots):
    """The gateway's API unreachable on the first load: the error screen, in
    words, with a title, Quick exit and Try again; axe passes."""
    b = browser(width=320, height=640)
    b.call("block", pattern="**/_threshold/gateway/v1/**")
    b.goto(gw.url)
    screen(b, "error", shots, "error")
    assert b.eval("document.title") == "Notes"
    assert b.text("#s-error h1") == "Something went wrong"
    no_problems(b, allow=("ERR_INTERNET_DISCONNECTED",))


def test_first_load_weight(gw, browser):
    """Everything a first visit transfers, up to the notice in Arabic (page,
    script, styles, icon, two string files, the API answers): within 25 KB,
    each file fetched once.  Then what an open chat costs (the bench's chat
    figures): an idle minute within 1 KB over HTTP/1.1."""
    b = browser()
    open_link(b, gw.invite_link())
    choose_language(b, "en")  # the strings already fetched: not fetched again
    b.wait("#s-notice h1")
    b.click("#s-notice .to-lang")
    choose_language(b, "ar")
    b.wait("#s-notice h1")
    b.eval("new Promise(r => setTimeout(r, 300))")  # let the icon finish
    entries = b.eval("performance.getEntriesByType('navigation')"
                     ".concat(performance.getEntriesByType('resource'))"
                     ".map(e => [e.name, e.transferSize, e.encodedBodySize])")
    total = sum(e[1] for e in entries)
    print("first load: %d bytes transferred in %d responses" % (total, len(entries)))
    assert all(e[1] > 0 for e in entries), entries  # nothing came from a cache
    files = [e[0] for e in entries if "/_threshold/" not in e[0]]
    assert len(files) == len(set(files)), "a file fetched twice: %s" % files
    assert 0 < total <= 25 * 1024, entries
    # The bench's --url mode measures the same gateway and agrees on the budgets.
    r = subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "bench", "page_weight.py"),
                        "--url", gw.url, "--service", "helpline", "--check", "--check-chat", "idle,out,in"],
                       capture_output=True, text=True, timeout=120)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the layout on a phone ------------------------------------------------------

SIZES = ((320, 640), (375, 812), (768, 1024))
KEYBOARD = 0.45  # an on-screen keyboard takes about this much of a phone's height

IN_VIEW = """(sel => { const vv = visualViewport, out = [];
  for (const e of document.querySelectorAll(sel)) {
    if (!e.getClientRects().length) continue;
    const r = e.getBoundingClientRect();
    if (r.top < -0.5 || r.left < -0.5 || r.bottom > vv.height + 0.5 || r.right > vv.width + 0.5)
      out.push([e.id || e.className || e.tagName, Math.round(r.top), Math.round(r.bottom),
                Math.round(r.left), Math.round(r.right), vv.width, vv.height]);
  }
  return out; })(%s)"""

SMALL = """[...document.querySelectorAll('button, summary, label[for=c-file], input[type=checkbox] + label')]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
  .map(e => [e.id || e.textContent.trim().slice(0, 20), e.getBoundingClientRect()])
  .filter(([, r]) => r.height < 43.5 || r.width < 43.5)
  .map(([n, r]) => [n, Math.round(r.width), Math.round(r.height)])"""


def in_view(b, selector):
    return b.eval(IN_VIEW % js(selector))


def test_chat_layout_with_the_keyboard_open(gw, browser, shots):
    """At 320x640, 375x812 and 768x1024, in English and Arabic: the newest
    message and the composer are inside the visual viewport, with and
    without an on-screen keyboard (the viewport's height shrunk, as Chrome
    on Android does); the Options dialog and each confirm step have every
    button on screen; every target is at least 44 px; axe passes on each."""
    for code in ("en", "ar"):
        b = browser(width=320, height=640)
        to_chat(b, gw, code, prefix=None)
        for i in range(12):
            b.fill("#c-text", "message %d: a line long enough to wrap on a narrow phone screen" % i)
            b.click("#c-send")
        b.wait_js("document.querySelectorAll('.msg.self .state.sent').length === 12", timeout=90000)
        for width, height in SIZES:
            for keyboard in (False, True):
                h = int(height * (1 - KEYBOARD)) if keyboard else height
                b.call("viewport", width=width, height=h)
                b.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                if keyboard:
                    b.click("#c-text")
                where = "%s %dx%d%s" % (code, width, h, " keyboard" if keyboard else "")
                assert in_view(b, "#c-msgs .msg:last-child, #c-text, #c-send, label[for=c-file], #exit,"
                                  " #c-menu-open") == [], where
                assert b.eval("document.documentElement.scrollWidth") <= width, where
                assert b.eval(SMALL) == [], where
                if shots is not None and width == 320 and code in ("en", "ar"):
                    shots(b, "%s-chat-320%s" % (code, "-keyboard" if keyboard else ""))
            b.call("viewport", width=width, height=height)
            b.click("#c-menu-open")
            b.wait("#c-menu h2")
            assert in_view(b, "#c-menu, #c-menu button") == [], (code, width, "options")
            assert b.eval(SMALL) == [], (code, width, "options")
            check_axe(b, "options %s %d" % (code, width))
            for opener, dialog in (("#c-leave", "#c-confirm-leave"), ("#c-erase", "#c-confirm-erase")):
                b.click(opener)
                b.wait(dialog + " h2")
                assert in_view(b, "%s, %s button" % (dialog, dialog)) == [], (code, width, dialog)
                check_axe(b, "%s %s %d" % (dialog, code, width))
                if shots is not None and width == 320:
                    shots(b, "%s-%s-320" % (code, dialog[1:]))
                b.click(dialog + " .c-cancel")
                b.wait_js("!document.querySelector('dialog[open]')")
                b.click("#c-menu-open")
            b.click("#c-menu .d-close")
        check_axe(b, "chat " + code)
        no_problems(b)


def test_bidi_controls_and_long_text_from_staff(gw, browser, shots):
    """A right-to-left override in a staff message or a staff name reorders
    nothing around it ("invoice gpj.exe" is not shown as "invoice exe.jpg");
    combining marks stay in their bubble; a 10,000-letter word wraps inside it."""
    b = browser(width=320, height=640)
    pseudonym = to_chat(b, gw, "en", prefix=None)
    send(b, "hello")
    room, _ = gw.staff_sees(pseudonym, "hello")
    gw.staff_says(room, "invoice \u202egpj.exe please")
    gw.staff_says(room, "Z" + "\u0301\u0316" * 150 + "alg" + "\u0327" * 80 + "o")
    gw.staff_says(room, "x" * 10000)
    b.wait_js("[...document.querySelectorAll('.msg.staff .body')].some(e => e.textContent.length >= 10000)",
              timeout=60000)
    order = b.eval("""(() => {
      const body = [...document.querySelectorAll('.msg.staff .body')].find(e => e.textContent.includes('gpj'));
      const t = body.firstChild, s = t.data, r = document.createRange();
      const x = i => { r.setStart(t, i); r.setEnd(t, i + 1); return r.getBoundingClientRect().left; };
      return {text: s, g: x(s.indexOf('gpj')), e: x(s.indexOf('exe')), p: x(s.indexOf('please'))}; })()""")
    assert "\u202e" not in order["text"], order
    assert order["g"] < order["e"] < order["p"], order
    # No control character of any kind in what the page shows from staff.
    shown = b.eval("[...document.querySelectorAll('#c-msgs .who, #c-msgs .body')].map(e => e.textContent).join('')")
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f\x00-\x08\x0b-\x1f\x7f-\x9f]", shown)
    # Each name and body is isolated from what is around it.
    assert b.eval("[...document.querySelectorAll('#c-msgs .who')].every(e => e.tagName === 'BDI' && e.dir === 'auto')")
    assert b.eval("[...document.querySelectorAll('#c-msgs .body')].every(e => e.dir === 'auto')")
    # Marks and long words: inside the bubble, nothing sideways.
    boxes = b.eval("""[...document.querySelectorAll('#c-msgs .msg')].map(m => {
      const r = m.getBoundingClientRect(), l = document.getElementById('c-msgs').getBoundingClientRect();
      return [r.left >= l.left - 0.5 && r.right <= l.right + 0.5, m.scrollWidth <= m.clientWidth + 1,
              getComputedStyle(m).overflowX]; })""")
    assert all(b_[0] and b_[1] for b_ in boxes), boxes
    assert b.eval("document.getElementById('c-msgs').scrollWidth <= document.getElementById('c-msgs').clientWidth")
    zalgo = b.eval("[...document.querySelectorAll('.msg.staff .body')].find(e => e.textContent.startsWith('Z'))"
                   ".closest('li').getBoundingClientRect().height")
    assert zalgo < 120, zalgo
    no_problems(b)


def test_quick_exit_leaves_no_token_in_the_profile(gw, browser, tmp_path):
    """A browser with a profile on disk, as on a phone.  One link opened and
    left by Quick exit at the notice (before agreeing); another taken to the
    chat, a message written, Quick exit; the browser closed.  No session
    token, code or message is anywhere in the profile's files (history,
    favicons, sessions, storage, cache).  The links the history kept open
    nothing: whoever picks up the phone and opens one sees only that the
    link does not work."""
    profile = str(tmp_path / "profile")
    b = browser(profile=profile)
    b.goto(gw.before_url)
    b.call("set_origin", url=gw.url)
    first = gw.invite_link()
    open_link(b, first)
    choose_language(b, "en")
    b.wait("#s-notice h1")
    assert b.eval("document.title") == gw.page_title
    b.click("#exit")
    b.wait_js("location.href === %s" % js(gw.exit_url))
    assert not gw.invitation_ok(first.split("#invite=", 1)[1]), "the link left in history still opens"

    to_chat(b, gw, "en", keep=True, prefix=None)
    send(b, "a secret of mine")
    s = b.eval("JSON.parse(localStorage.getItem('g.s') || sessionStorage.getItem('g.s'))")
    secrets_ = {"session token": s["token"], "resume code": s["resume_code"],
                "message": "a secret of mine"}
    b.click("#exit")
    b.wait_js("location.href === %s" % js(gw.exit_url))
    b.close()

    found, names = {}, []
    for root, _dirs, files in os.walk(profile):
        for f in files:
            path = os.path.join(root, f)
            names.append(os.path.relpath(path, profile))
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            for what, value in secrets_.items():
                if value and (value.encode() in data or value.encode("utf-16-le") in data):
                    found.setdefault(what, []).append(os.path.relpath(path, profile))
    assert "Default/History" in names, names  # the history was there to search
    assert found == {}, found

    c = browser()
    c.goto(first)
    c.wait_js("!document.getElementById('s-lang').hidden || !document.getElementById('s-invalid').hidden")
    if c.eval("!document.getElementById('s-lang').hidden"):
        choose_language(c, "en")
    screen(c, "invalid", None)
