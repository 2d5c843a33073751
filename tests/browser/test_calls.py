"""Calls end to end on one machine (docs/calls.md): the real daemon and a real
Synapse, coturn on loopback started here (relay only), the guest page in
Debian's Chromium with a fake microphone, and on the staff side a second
headless Chromium running matrix-js-sdk's call implementation (the code
Element Web uses; tests/calls, bundled from its lockfile) logged in as staff.

What a guest and a worker would notice: the call connects, through the relay
on both sides; sound flows both ways; hanging up and declining reach the
other side; an unanswered call ends at its lifetime with "staff could not
take the call"; quick exit hangs up.  And what they must never notice:
neither side ever receives a host or server-reflexive candidate, nor this
machine's own address.
"""

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import struct
import subprocess
import threading
import time
import wave
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SOURCE_DIR
from helpers import audit_records
from test_guest_page import no_problems, to_chat, send

sys_path_harness = os.path.join(SOURCE_DIR, "tests", "harness")
import sys  # noqa: E402
sys.path.insert(0, sys_path_harness)
from coturn import Coturn  # noqa: E402

CALLS = os.path.join(SOURCE_DIR, "tests", "calls")
SECRET = "browser-calls-" + secrets.token_hex(12)


def machine_addresses():
    """This machine's own addresses (never loopback): none may cross."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return [a for a in out if not a.startswith("127.") and a != "::1"]


def speech_wav(path, seconds=40):
    """Speech-like input: 1.5 s of voiced sound (harmonics, varying pitch and
    loudness), then 1.5 s of silence, so DTX has pauses to work on."""
    rate = 48000
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = bytearray()
        for i in range(seconds * rate):
            tt = i / rate
            if (tt % 3.0) < 1.5:
                f0 = 140 + 40 * math.sin(2 * math.pi * 0.7 * tt)
                env = 0.5 + 0.5 * math.sin(2 * math.pi * 4 * tt)
                v = sum(math.sin(2 * math.pi * f0 * k * tt) / k for k in range(1, 6)) * env * 5000
            else:
                v = 0
            frames += struct.pack("<h", int(max(-32767, min(32767, v))))
        w.writeframes(bytes(frames))


def cred(secret, ttl=3600):
    username = "%d:staff%s" % (int(time.time()) + ttl, secrets.token_hex(4))
    pw = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, pw


@pytest.fixture(scope="module")
def turn(env, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("coturn"))
    t = Coturn(d, SECRET).start()
    env.calls = {"enabled": True, "turn_uris": [t.uri], "turn_shared_secret": SECRET, "turn_ttl_seconds": 600}
    try:
        yield t
    finally:
        env.calls = None
        t.stop()


@pytest.fixture(scope="module")
def callgw(turn, gw):
    """The gateway with calls on (turn is set up first, so gw's config has it)."""
    return gw


@pytest.fixture(scope="module")
def staff_site():
    """The staff page: tests/calls/build/staff.js behind a loopback server."""
    bundle = os.path.join(CALLS, "build", "staff.js")
    if not os.path.exists(bundle):
        subprocess.run(["npm", "run", "bundle"], cwd=CALLS, check=True)
    with open(os.path.join(CALLS, "build", "staff.html"), "w") as f:
        f.write("<!doctype html><meta charset=utf-8><title>staff</title><script src=staff.js></script>")
    srv = ThreadingHTTPServer(("127.0.0.1", 0),
                              partial(type("Q", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                      directory=os.path.join(CALLS, "build")))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/staff.html" % srv.server_address[1]
    srv.shutdown()


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("audio") / "speech.wav")
    speech_wav(p)
    return p


def media_flags(wav):
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
            "--use-file-for-fake-audio-capture=%s" % wav]


class Staff:
    """The staff side in its own Chromium: matrix-js-sdk, relay only."""

    def __init__(self, browser, env, turn, site, wav, force_turn=True):
        self.b = browser(args=media_flags(wav))
        self.b.goto(site)
        self.b.wait_js("window.staff && typeof window.staff.start === 'function'")
        user_id, _, token, device = env.users["staff"]
        username, pw = cred(SECRET)
        self.b.eval("staff.start(%s)" % json.dumps({
            "hs": env.hs_url, "userId": user_id, "token": token, "deviceId": device,
            "turn": {"urls": [turn.uri], "username": username, "credential": pw},
            "forceTURN": force_turn}))

    def js(self, expr):
        return self.b.eval(expr)

    def wait(self, expr, timeout=60000):
        return self.b.wait_js(expr, timeout=timeout)

    def stats(self, room):
        return self.b.eval("staff.stats(%s)" % json.dumps(room))


def R(room):
    return json.dumps(room)


def guest_stats(b):
    """The guest page's call, as its own RTCPeerConnection reports it."""
    return b.eval("""(async () => {
      const m = await import('./call.js');
      const r = await m.current().stats();
      if (!r) return null;
      const byId = {}; r.forEach(v => { byId[v.id] = v; });
      const out = {local: null, remote: null, remotes: [], locals: [], in_packets: 0, out_packets: 0,
                   bytes_in: 0, bytes_out: 0, audio_in: 0, audio_out: 0};
      r.forEach(v => {
        if (v.type === 'transport' && v.selectedCandidatePairId) {
          const p = byId[v.selectedCandidatePairId];
          out.local = byId[p.localCandidateId].candidateType;
          out.remote = byId[p.remoteCandidateId].candidateType;
          out.bytes_in = p.bytesReceived; out.bytes_out = p.bytesSent;
        }
        if (v.type === 'remote-candidate') out.remotes.push({type: v.candidateType, address: v.address});
        if (v.type === 'local-candidate') out.locals.push({type: v.candidateType, address: v.address});
        if (v.type === 'inbound-rtp' && v.kind === 'audio') {
          out.in_packets += v.packetsReceived; out.audio_in += v.bytesReceived + (v.headerBytesReceived || 0); }
        if (v.type === 'outbound-rtp' && v.kind === 'audio') {
          out.out_packets += v.packetsSent; out.audio_out += v.bytesSent + (v.headerBytesSent || 0); }
      });
      return out;
    })()""")


def feed_signals(b):
    """Every call signal the gateway gave this page (its raw feed, read again)."""
    return b.eval("""(async () => {
      const s = JSON.parse(sessionStorage.getItem('g.s') || localStorage.getItem('g.s'));
      const r = await fetch('_threshold/gateway/v1/feed?since=0&timeout_ms=0',
                            {headers: {Authorization: 'Bearer ' + s.token}});
      return (await r.json()).events.filter(e => e.kind === 'call');
    })()""")


def no_address_crossed(texts, own):
    blob = json.dumps(texts)
    assert "typ host" not in blob and "typ srflx" not in blob and "typ prflx" not in blob, blob[:2000]
    for a in own:
        assert a not in blob, "%s crossed: %s" % (a, blob[:2000])


def start_guest(callgw, browser, wav):
    b = browser(args=media_flags(wav))
    pseudonym = to_chat(b, callgw, prefix=None)
    send(b, "hello, can we talk?")
    room = callgw.portal(pseudonym)
    b.wait("#c-call")
    return b, room


def test_guest_calls_staff_relay_only(callgw, browser, turn, staff_site, wav, env, threshold):
    own = machine_addresses()
    g, room = start_guest(callgw, browser, wav)
    assert not g.eval("performance.getEntriesByType('resource').some(e => e.name.endsWith('/call.js'))"), \
        "call.js was loaded before any call"
    s = Staff(browser, env, turn, staff_site, wav)

    # the guest rings (voice); staff's js-sdk sees the invite and answers
    g.click("#c-call")
    g.wait("#c-callbox button.primary")
    assert "25 MB" in g.text("#c-callbox"), g.text("#c-callbox")
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'ringing'" % R(room))
    s.js("staff.answer(%s)" % R(room))
    s.wait("staff.state(%s) === 'connected'" % R(room), timeout=60000)
    g.wait_js("/On a call/.test((document.querySelector('#c-callbox .call-state') || {}).textContent)",
              timeout=60000)

    # sound both ways, through the relay on both sides
    time.sleep(8)
    gs, ss = guest_stats(g), s.stats(room)
    assert (gs["local"], gs["remote"]) == ("relay", "relay"), gs
    assert (ss["local"], ss["remote"]) == ("relay", "relay"), ss
    assert gs["in_packets"] > 30 and gs["out_packets"] > 30, gs
    assert ss["in_packets"] > 30 and ss["out_packets"] > 30, ss
    # no host or server-reflexive candidate, no address of this machine, reached either side
    assert all(c["type"] == "relay" for c in gs["remotes"]), gs["remotes"]
    assert all(c["type"] == "relay" for c in ss["remotes"]), ss["remotes"]
    no_address_crossed([ss["sdp"], ss["remotes"], gs["remotes"], feed_signals(g)], own)
    # the page declared a cheap Opus for what it receives
    # (Chromium writes the parameters back in its own order)
    for want in ("maxaveragebitrate=12000", "usedtx=1", "a=ptime:60"):
        assert want in ss["sdp"], (want, ss["sdp"])

    # staff hang up: the guest's page says so at once
    s.js("staff.hangup(%s)" % R(room))
    g.wait_js("/Call ended/.test((document.querySelector('#c-callbox .call-state') || {}).textContent)")
    guest_id = audit_records(threshold, "call_offered")[-1]["subject"]
    no_problems(g, allow=("Failed to load resource",))

    offered = audit_records(threshold, "call_offered", subject=guest_id)
    answered = audit_records(threshold, "call_answered", subject=guest_id)
    ended = audit_records(threshold, "call_ended", subject=guest_id)
    assert offered and offered[-1]["details"]["by"] == "guest"
    assert answered and answered[-1]["actor"].startswith("@staff:")
    assert ended and ended[-1]["details"]["answered"] is True and ended[-1]["details"]["duration_s"] >= 5


def test_staff_calls_guest_who_hangs_up_then_declines(callgw, browser, turn, staff_site, wav, env):
    g, room = start_guest(callgw, browser, wav)
    s = Staff(browser, env, turn, staff_site, wav)

    # staff ring from Element's call button; the page rings; the guest answers
    s.js("staff.place(%s)" % json.dumps(room))
    g.wait_js("/Staff are calling you/.test(document.getElementById('c-callbox').textContent)",
              timeout=60000)
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'connected'" % R(room), timeout=60000)
    time.sleep(3)
    gs = guest_stats(g)
    assert (gs["local"], gs["remote"]) == ("relay", "relay"), gs
    assert gs["in_packets"] > 20, gs

    # the guest hangs up: staff's call ends
    g.click("#c-callbox button.danger")
    s.wait("staff.state(%s) === 'ended'" % R(room))
    assert s.js("staff.ended(%s).party" % R(room)) == "remote", s.js("staff.info(%s)" % R(room))

    # staff ring again; the guest declines: staff's call ends
    s.js("staff.place(%s)" % json.dumps(room))
    g.wait_js("/Staff are calling you/.test(document.getElementById('c-callbox').textContent)",
              timeout=60000)
    g.click("#c-callbox button.danger")
    s.wait("staff.state(%s) === 'ended'" % R(room))
    assert "declined" in g.text("#c-callbox")

    # the guest rings; staff decline: the page says staff could not take it
    g.click("#c-call")
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'ringing'" % R(room))
    s.js("staff.reject(%s)" % R(room))
    g.wait_js("/could not take the call/.test(document.getElementById('c-callbox').textContent)")
    no_address_crossed([feed_signals(g)], machine_addresses())


def test_quick_exit_hangs_up(callgw, browser, turn, staff_site, wav, env):
    g, room = start_guest(callgw, browser, wav)
    s = Staff(browser, env, turn, staff_site, wav)
    g.click("#c-call")
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'ringing'" % R(room))
    s.js("staff.answer(%s)" % R(room))
    s.wait("staff.state(%s) === 'connected'" % R(room), timeout=60000)
    g.click("#exit")
    g.wait_js("location.pathname === '/elsewhere'")
    s.wait("staff.state(%s) === 'ended'" % R(room), timeout=30000)
    assert s.js("staff.ended(%s).party" % R(room)) == "remote"


def test_unanswered_call_ends_at_its_lifetime(callgw, browser, turn, staff_site, wav, env, threshold):
    g, room = start_guest(callgw, browser, wav)
    s = Staff(browser, env, turn, staff_site, wav)
    g.click("#c-call")
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'ringing'" % R(room))
    t0 = time.monotonic()
    # nobody answers (as on a client that cannot take these calls)
    g.wait_js("/could not take the call/.test(document.getElementById('c-callbox').textContent)",
              timeout=90000)
    assert 55 <= time.monotonic() - t0 <= 80
    s.wait("staff.state(%s) === 'ended'" % R(room), timeout=30000)
    assert s.js("staff.ended(%s).party" % R(room)) == "remote", s.js("staff.info(%s)" % R(room))
    # on the record: rang about a minute, never answered, ended by its lifetime
    guest_id = audit_records(threshold, "call_offered")[-1]["subject"]
    ended = audit_records(threshold, "call_ended", subject=guest_id)
    assert ended and ended[-1]["reason"] == "invite_timeout", ended
    assert ended[-1]["details"]["answered"] is False and ended[-1]["details"]["rang_s"] >= 55, ended


def pair_counters(b):
    """The guest's selected candidate pair: bytes and packets each way (ICE level)."""
    return b.eval("""(async () => {
      const m = await import('./call.js');
      const r = await m.current().stats();
      const byId = {}; r.forEach(v => { byId[v.id] = v; });
      let out = null;
      r.forEach(v => {
        if (v.type === 'transport' && v.selectedCandidatePairId) {
          const p = byId[v.selectedCandidatePairId];
          out = Object.assign(out || {}, {bin: p.bytesReceived, bout: p.bytesSent, pin: p.packetsReceived || 0,
                                          pout: p.packetsSent || 0});
        }
      });
      r.forEach(v => {
        if (v.type === 'inbound-rtp' || v.type === 'outbound-rtp') {
          out[v.type + '-' + v.kind] = {packets: v.packetsSent || v.packetsReceived,
            bytes: v.bytesSent || v.bytesReceived, codec: (byId[v.codecId] || {}).sdpFmtpLine || ''};
        }
      });
      return out;
    })()""")


def measure(b, seconds):
    a = pair_counters(b)
    time.sleep(seconds)
    z = pair_counters(b)
    per_min = 60.0 / seconds
    # on the wire: the pair's bytes plus IPv4 and UDP headers (28 bytes a packet)
    for k in sorted(z):
        if "rtp" in k:
            print("  %s: %.1f packets/s, %.1f kbit/s payload, %s" % (
                k, (z[k]["packets"] - a[k]["packets"]) / seconds, (z[k]["bytes"] - a[k]["bytes"]) * 8 / seconds / 1e3,
                z[k]["codec"]))
    down = ((z["bin"] - a["bin"]) + 28 * (z["pin"] - a["pin"])) * per_min
    up = ((z["bout"] - a["bout"]) + 28 * (z["pout"] - a["pout"])) * per_min
    return down, up


@pytest.mark.skipif(not os.environ.get("THRESHOLD_CALL_BENCH"), reason="a measurement: bench/calls_data.sh")
def test_bench_call_data(callgw, browser, turn, staff_site, wav, env):
    """Bytes per minute each way on the guest's side, audio and video, against
    the budgets (docs/calls.md): audio about 2.5 MB per 10 minutes both ways,
    video about 25 MB per 10 minutes.  Input: speech-like, half the time."""
    seconds = int(os.environ.get("THRESHOLD_CALL_BENCH_SECONDS", "60"))
    rows = []
    for kind, video, budget in (("audio", False, 2.5e6 / 10), ("video 320x180", True, 25e6 / 10)):
        g, room = start_guest(callgw, browser, wav)
        s = Staff(browser, env, turn, staff_site, wav)
        g.click("#c-call")
        g.wait("#c-callbox button.primary")
        buttons = "#c-callbox .row button"
        g.eval("document.querySelectorAll(%s)[%d].click()" % (json.dumps(buttons), 1 if video else 0))
        s.wait("staff.state(%s) === 'ringing'" % R(room))
        s.js("staff.answer(%s, %s)" % (R(room), "true" if video else "false"))
        s.wait("staff.state(%s) === 'connected'" % R(room), timeout=60000)
        time.sleep(5)  # past the start-up ramp
        down, up = measure(g, seconds)
        rows.append((kind, down, up, budget))
        g.click("#c-callbox button.danger")
        s.wait("staff.state(%s) === 'ended'" % R(room))
        g.close()
        s.b.close()
    lines = ["", "call data on the guest's side, per minute (%d s measured; IPv4+UDP headers included)" % seconds,
             "| call | down KB/min | up KB/min | both ways, MB per 10 min | budget (about) | of budget |",
             "|---|---|---|---|---|---|"]
    for kind, down, up, budget in rows:
        both10 = (down + up) * 10 / 1e6
        lines.append("| %s | %.1f | %.1f | %.2f | %.1f | %.0f%% |"
                     % (kind, down / 1e3, up / 1e3, both10, budget * 10 / 1e6, 100 * both10 / (budget * 10 / 1e6)))
    print("\n".join(lines))


def test_staff_allowing_peer_to_peer_still_reveals_nothing(callgw, browser, turn, staff_site, wav, env):
    """Staff whose Element allows peer-to-peer calls send their host
    candidates into the room; Threshold drops them before the page sees them,
    and the call still connects, through the relay."""
    own = machine_addresses()
    g, room = start_guest(callgw, browser, wav)
    s = Staff(browser, env, turn, staff_site, wav, force_turn=False)
    g.click("#c-call")
    g.click("#c-callbox button.primary")
    s.wait("staff.state(%s) === 'ringing'" % R(room))
    s.js("staff.answer(%s)" % R(room))
    s.wait("staff.state(%s) === 'connected'" % R(room), timeout=60000)
    g.wait_js("/On a call/.test((document.querySelector('#c-callbox .call-state') || {}).textContent)",
              timeout=60000)
    time.sleep(3)
    # staff did send host candidates into the room...
    import requests
    from helpers import bearer, q
    r = requests.get("%s/_matrix/client/v3/rooms/%s/messages" % (env.hs_url, q(room)),
                     params={"dir": "b", "limit": 100}, headers=bearer(env.token("staff")), timeout=30)
    staff_sent = [e for e in r.json()["chunk"] if e["type"].startswith("m.call.")
                  and e["sender"].startswith("@staff:")]
    assert "typ host" in json.dumps(staff_sent), json.dumps(staff_sent)[:3000]
    # ...and none of them reached the guest's page
    gs = guest_stats(g)
    assert (gs["local"], gs["remote"]) == ("relay", "relay"), gs
    # Every candidate the page was told of is a relay one.  On one machine the
    # relay's address and staff's own are both 127.0.0.1, so the TURN
    # permission the page installs for staff's relay also lets staff's own
    # checks in, which Chromium reports as a peer-reflexive candidate with
    # its address withheld from the page; in production the relay's address
    # is the TURN server's, and coturn drops those checks.
    assert all(c["type"] == "relay" or (c["type"] == "prflx" and not c["address"])
               for c in gs["remotes"]), gs["remotes"]
    assert [c for c in gs["remotes"] if c["type"] == "relay"], gs["remotes"]
    no_address_crossed([feed_signals(g), gs["remotes"]], own)
    g.click("#c-callbox button.danger")
    s.wait("staff.state(%s) === 'ended'" % R(room))
