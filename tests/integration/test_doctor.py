"""`threshold doctor` against the real Synapse: all green on a correct set-up,
then each fault it names (a wrong token, the homeserver down, Threshold down,
the bot made a server admin, a hardening setting missing, a nearly full map),
each named with its fix, and nothing else.

The doctor runs beside the serving daemon (it opens the store read-only), as
an admin would run it.
"""

import json
import os
import shutil
import tempfile

import pytest
import requests
import yaml

from conftest import BIN, harness
from helpers import bearer, q, staff_room_with_bot
from standalone import REMOTE_SERVER, Standalone, closed_port, member_event


def doctor(env, config=None, *args):
    return env.threshold.run("doctor", "--json", *args, check=False) if config is None else \
        run_with(env.threshold.bin, config, "doctor", "--json", *args)


def run_with(binary, config, *args):
    import subprocess
    return subprocess.run([binary, "-c", config, *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)


def findings(r):
    try:
        out = json.loads(r.stdout)
    except ValueError:
        raise AssertionError("doctor --json printed no JSON (exit %d): %r %r"
                             % (r.returncode, r.stdout, r.stderr))
    return out


def attention(out):
    """The names of the checks that need attention; each must say how to fix it."""
    bad = [f for f in out["findings"] if f["status"] == "attention"]
    for f in bad:
        assert f.get("fix"), "finding without a fix: %r" % f
        assert f.get("message"), f
    return {f["check"] for f in bad}


def status_of(out, check):
    return {f["status"] for f in out["findings"] if f["check"] == check}


@pytest.fixture(scope="module")
def staffed(env):
    """A staff room with the bot in it, named in roles.staff_rooms."""
    if not env.threshold.running():
        env.threshold.start()
    room = staff_room_with_bot(env, "doctor staff room")
    env.staff_rooms = [room]
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    yield room
    env.staff_rooms = []
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="threshold-doctor-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def config_copy(env, scratch, change):
    """A copy of the test config changed by change(cfg, scratch); its path."""
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    change(cfg, scratch)
    path = os.path.join(scratch, "threshold.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def test_correct_setup_is_all_green(env, threshold, staffed):
    r = doctor(env)
    out = findings(r)
    assert attention(out) == set(), json.dumps(out, indent=1)
    assert r.returncode == 0 and out["status"] == "ok"
    names = {f["check"] for f in out["findings"] if f["status"] == "ok"}
    for want in ("registration", "homeserver", "invite_blocking", "as_token", "ping", "bot_admin",
                 "bot_rooms", "profile_requires_auth", "profile_shared_rooms", "guest_access",
                 "file_modes", "store_map", "disk"):
        assert want in names, (want, json.dumps(out, indent=1))
    # The plain text says the same to a person.
    text = threshold.run("doctor", check=False)
    assert text.returncode == 0 and "All good." in text.stdout, text.stdout
    assert "FIX" not in text.stdout


def test_wrong_token_is_named_with_its_fix(env, threshold, scratch):
    def change(cfg, d):
        with open(env.registration_path) as f:
            reg = yaml.safe_load(f)
        reg["as_token"] = "not-the-token-the-homeserver-has"
        path = os.path.join(d, "registration.yaml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(reg, f)
        cfg["appservice"]["registration"] = path
    r = doctor(env, config_copy(env, scratch, change))
    out = findings(r)
    assert r.returncode == 1
    assert attention(out) == {"as_token"}, json.dumps(out, indent=1)
    fix = [f["fix"] for f in out["findings"] if f["check"] == "as_token"][0]
    assert "restart the homeserver" in fix
    assert status_of(out, "ping") == {"skipped"}


def test_homeserver_down_is_named(env, threshold, scratch):
    def change(cfg, d):
        cfg["homeserver"]["url"] = "http://127.0.0.1:%d" % closed_port()
    r = doctor(env, config_copy(env, scratch, change))
    out = findings(r)
    assert r.returncode == 1
    assert attention(out) == {"homeserver"}, json.dumps(out, indent=1)
    msg = [f["message"] for f in out["findings"] if f["check"] == "homeserver"][0]
    assert "Cannot reach the homeserver" in msg


def test_threshold_down_fails_the_ping(env, threshold):
    threshold.stop()
    try:
        out = findings(doctor(env))
        assert attention(out) == {"ping"}, json.dumps(out, indent=1)
        fix = [f["fix"] for f in out["findings"] if f["check"] == "ping"][0]
        assert "Start Threshold" in fix
    finally:
        threshold.start()


def test_bot_made_admin_is_named(env, threshold):
    url = "%s/_synapse/admin/v1/users/%s/admin" % (env.hs_url, q(env.bot))
    r = requests.put(url, json={"admin": True}, headers=bearer(env.token("admin")), timeout=30)
    assert r.status_code == 200, r.text
    try:
        out = findings(doctor(env))
        assert attention(out) == {"bot_admin"}, json.dumps(out, indent=1)
    finally:
        r = requests.put(url, json={"admin": False}, headers=bearer(env.token("admin")), timeout=30)
        assert r.status_code == 200, r.text
    assert attention(findings(doctor(env))) == set()


def test_open_registration_file_is_named(env, threshold):
    os.chmod(env.registration_path, 0o644)
    try:
        out = findings(doctor(env))
        assert attention(out) == {"file_modes"}, json.dumps(out, indent=1)
        assert any("chmod 600 " + env.registration_path == f.get("fix") for f in out["findings"])
    finally:
        os.chmod(env.registration_path, 0o600)


def test_synapse_config_setting_is_read(env, threshold, scratch):
    with open(env.hs.config_host) as f:
        hs_cfg = yaml.safe_load(f)
    good = os.path.join(scratch, "homeserver.yaml")
    with open(good, "w") as f:
        yaml.safe_dump(hs_cfg, f)
    out = findings(doctor(env, None, "--synapse-config", good))
    assert attention(out) == set(), json.dumps(out, indent=1)
    hs_cfg["include_profile_data_on_invite"] = True
    bad = os.path.join(scratch, "homeserver-bad.yaml")
    with open(bad, "w") as f:
        yaml.safe_dump(hs_cfg, f)
    out = findings(doctor(env, None, "--synapse-config", bad))
    assert attention(out) == {"synapse_setting"}, json.dumps(out, indent=1)
    assert any("include_profile_data_on_invite" in f["message"] for f in out["findings"]
               if f["status"] == "attention")


def test_missing_hardening_setting_is_seen_from_outside(env, threshold):
    """Synapse restarted without limit_profile_requests_to_users_who_share_rooms."""
    saved = dict(harness.PRIVACY)
    harness.PRIVACY["limit_profile_requests_to_users_who_share_rooms"] = False
    try:
        env.hs.restart()
        out = findings(doctor(env))
        assert attention(out) == {"profile_shared_rooms"}, json.dumps(out, indent=1)
    finally:
        harness.PRIVACY.clear()
        harness.PRIVACY.update(saved)
        env.hs.restart()
    out = findings(doctor(env))
    assert attention(out) == set(), json.dumps(out, indent=1)


def test_nearly_full_map_is_named(scratch):
    """No homeserver here (Standalone): the map fills with invites of the bot."""
    d = Standalone(BIN, scratch, map_size_mb=16, log_level="warn").setup()
    d.start()
    try:
        conn = d.connection()
        n = 0
        while True:
            events = [member_event("$df-%d-%d" % (n, i), "!df-%d-%d:%s" % (n, i, REMOTE_SERVER),
                                   "@stranger:" + REMOTE_SERVER, d.bot, "invite") for i in range(20)]
            status, _ = d.put_txn("df-%d" % n, {"events": events}, conn=conn)
            n += 1
            if status != 200:
                break
            if n % 25 == 0:
                st = json.loads(d.run("status", "--json").stdout)
                if st["store_bytes_used"] * 100 >= 93 * st["store_map_bytes"]:
                    break
            assert n < 100000
        conn.close()
        r = run_with(BIN, d.config_path, "doctor", "--json")
        out = findings(r)
        assert r.returncode == 1
        # The homeserver is really absent here; that is named too, and nothing else.
        assert attention(out) == {"store_map", "homeserver"}, json.dumps(out, indent=1)
        fix = [f["fix"] for f in out["findings"] if f["check"] == "store_map"][0]
        assert "map_size_mb" in fix
    finally:
        d.kill()


def test_bad_option_cannot_run(env):
    r = env.threshold.run("doctor", "--frobnicate", check=False)
    assert r.returncode == 2


def test_sms_gateway_down_is_named_and_up_is_fine(env, threshold, scratch):
    """With the SMS channel on, doctor asks Kannel's sendsms interface:
    nothing listening is named with its fix; any HTTP answer (smsbox refuses
    a GET without its user) is fine."""
    import http.server
    import threading

    def with_sms(url):
        def change(cfg, d):
            cfg["services"] = {"texts": {"display_name": "Texts", "staff_room": "!texts:localhost",
                                         "sms_number": "+447700900123"}}
            cfg["sms"] = {"enabled": True, "secret": "0123456789abcdefgh",
                          "kannel_sendsms_url": url, "kannel_username": "u", "kannel_password": "p",
                          "key_file": os.path.join(d, "sms.key")}
        return change

    r = doctor(env, config_copy(env, scratch, with_sms(
        "http://127.0.0.1:%d/cgi-bin/sendsms" % closed_port())))
    out = findings(r)
    assert "sms" in attention(out), json.dumps(out, indent=1)
    fix = [f["fix"] for f in out["findings"] if f["check"] == "sms"][0]
    assert "bearerbox" in fix and "sms.kannel_sendsms_url" in fix

    class Smsbox(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b"Authorization failed for sendsms")

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Smsbox)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = doctor(env, config_copy(env, scratch, with_sms(
            "http://127.0.0.1:%d/cgi-bin/sendsms" % srv.server_address[1])))
        out = findings(r)
        assert status_of(out, "sms") == {"ok"}, json.dumps(out, indent=1)
    finally:
        srv.shutdown()


def test_turn_server_answers_and_silence_is_named(env, threshold, scratch):
    """With calls on, doctor asks each TURN URI for an Allocate without
    credentials: the real coturn (UDP and TCP) asks for them (401 with a realm
    and a nonce), which is fine; a port where nothing answers, and one that
    stays silent, are each named with a fix, the silent one within ~2 s."""
    import socket
    import time

    from coturn import Coturn

    def with_turn(uris):
        def change(cfg, d):
            cfg["calls"] = {"enabled": True, "turn_uris": uris,
                            "turn_shared_secret": "doctor-turn-secret-0123456789"}
        return change

    turn = Coturn(os.path.join(scratch, "coturn"), "doctor-turn-secret-0123456789")
    turn.start()
    try:
        tcp = "turn:127.0.0.1:%d?transport=tcp" % turn.port
        r = doctor(env, config_copy(env, scratch, with_turn([turn.uri, tcp])))
        out = findings(r)
        rows = [f for f in out["findings"] if f["check"] == "turn"]
        assert [f["status"] for f in rows] == ["ok", "ok"], json.dumps(out, indent=1)
        assert "UDP" in rows[0]["message"] and "TCP" in rows[1]["message"], rows
        assert "401" in rows[0]["message"] and "realm" in rows[0]["message"], rows
        assert r.returncode == 0 and attention(out) == set(), json.dumps(out, indent=1)
        text = run_with(env.threshold.bin, config_copy(env, scratch, with_turn([turn.uri])), "doctor")
        assert "ok    The TURN server at %s answers over UDP" % turn.uri in text.stdout, text.stdout
    finally:
        turn.stop()

    # coturn gone: the same URI now refuses (ICMP port unreachable on loopback)
    r = doctor(env, config_copy(env, scratch, with_turn([turn.uri])))
    out = findings(r)
    assert r.returncode == 1 and attention(out) == {"turn"}, json.dumps(out, indent=1)
    f = [f for f in out["findings"] if f["check"] == "turn"][0]
    assert f["message"].startswith("Nothing answers TURN at %s over UDP" % turn.uri), f
    assert "coturn" in f["fix"] and "calls.turn_uris" in f["fix"], f

    # a port that takes the datagrams and never answers: a plain sentence after ~2 s
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        uri = "turn:127.0.0.1:%d" % silent.getsockname()[1]
        t0 = time.monotonic()
        r = doctor(env, config_copy(env, scratch, with_turn([uri])))
        took = time.monotonic() - t0
        out = findings(r)
        f = [f for f in out["findings"] if f["check"] == "turn"][0]
        assert f["status"] == "attention" and r.returncode == 1, f
        assert f["message"] == ("Nothing answered TURN at %s over UDP within 2 seconds: guests' calls "
                                "could not connect." % uri), f
        assert took < 15, took
        # it was asked, again after 0.5 s and 1.5 s: three Binding and three Allocate requests
        silent.settimeout(0)
        got = []
        while True:
            try:
                got.append(silent.recv(2048))
            except BlockingIOError:
                break
        assert sorted(d[:2] for d in got) == [b"\x00\x01"] * 3 + [b"\x00\x03"] * 3, got
    finally:
        silent.close()


class FakeStun:
    """A fault only a misconfigured server shows, on the real wire format
    (RFC 8489): over UDP it answers a Binding with a success carrying
    XOR-MAPPED-ADDRESS, and an Allocate with a success (an open relay) or
    not at all (a STUN-only server)."""

    def __init__(self, open_relay):
        import socket
        import struct
        import threading
        self.struct = struct
        self.open_relay = open_relay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, req):
        st = self.struct
        mtype, _, cookie = st.unpack("!HHI", req[:8])
        if cookie != 0x2112A442:
            return None
        txid = req[8:20]
        xma = st.pack("!HHBBH4s", 0x0020, 8, 0, 1, 5000 ^ 0x2112, bytes(a ^ b for a, b in zip(
            bytes([127, 0, 0, 1]), st.pack("!I", 0x2112A442))))
        if mtype == 0x0001:
            body = xma
            return st.pack("!HHI", 0x0101, len(body), 0x2112A442) + txid + body
        if mtype == 0x0003 and self.open_relay:
            body = xma + st.pack("!HHI", 0x000D, 4, 600)  # LIFETIME
            return st.pack("!HHI", 0x0103, len(body), 0x2112A442) + txid + body
        return None

    def serve(self):
        while self.running:
            try:
                req, peer = self.sock.recvfrom(2048)
            except OSError:
                continue
            out = self.answer(req)
            if out:
                self.sock.sendto(out, peer)

    def close(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.mark.parametrize("open_relay,words", [
    (False, "answers STUN but not TURN's Allocate"),
    (True, "gives out relays without credentials"),
])
def test_turn_that_is_not_a_turn_server_with_credentials(env, threshold, scratch, open_relay, words):
    """A STUN-only server, and a relay open to anyone, each need attention."""
    fake = FakeStun(open_relay)
    try:
        uri = "turn:127.0.0.1:%d?transport=udp" % fake.port

        def change(cfg, d):
            cfg["calls"] = {"enabled": True, "turn_uris": [uri],
                            "turn_shared_secret": "doctor-turn-secret-0123456789"}
        r = doctor(env, config_copy(env, scratch, change))
        out = findings(r)
        assert r.returncode == 1 and attention(out) == {"turn"}, json.dumps(out, indent=1)
        f = [f for f in out["findings"] if f["check"] == "turn"][0]
        assert words in f["message"], f
    finally:
        fake.close()
