"""Calls between a guest's page and staff (docs/calls.md), the server side:
the gateway carries the guest's m.call.* signals into the room as the guest,
staff's reach the guest's feed, and no address but the TURN relay's crosses
in either direction.  Real Synapse; staff speak the CS API as a Matrix client
does.  (The media path, coturn and two browsers: tests/browser/test_calls.py.)"""

import base64
import hashlib
import hmac
import json
import secrets
import time

import pytest
import requests

from gateway import Guest, wait_gateway, join_portal
from helpers import audit_records, bearer, q, room_state, staff_room_with_bot, wait

SECRET = "calls-test-secret-" + secrets.token_hex(8)

HOST = "192.168.77.20"     # the sender's LAN address
PUBLIC = "203.0.113.77"    # its public (server-reflexive) address
RELAY = "127.0.0.1"        # the TURN server's relay address


def sdp(kind):
    return ("v=0\r\no=- 4611731400430051336 2 IN IP4 %s\r\ns=-\r\nt=0 0\r\n"
            "m=audio 50123 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 %s\r\n"
            "a=candidate:1 1 udp 2122260223 %s 50123 typ host generation 0\r\n"
            "a=candidate:2 1 udp 1686052607 %s 50123 typ srflx raddr %s rport 50123\r\n"
            "a=candidate:3 1 udp 41885439 %s 61000 typ relay raddr %s rport 50123\r\n"
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 maxaveragebitrate=12000;usedtx=1\r\n"
            "a=ptime:60\r\na=setup:%s\r\n"
            % (HOST, PUBLIC, HOST, PUBLIC, HOST, RELAY, PUBLIC, "actpass" if kind == "offer" else "active"))


CANDS = [
    {"candidate": "candidate:1 1 udp 2122260223 %s 50123 typ host generation 0" % HOST,
     "sdpMid": "0", "sdpMLineIndex": 0},
    {"candidate": "candidate:2 1 udp 1686052607 %s 50123 typ srflx raddr %s rport 50123" % (PUBLIC, HOST),
     "sdpMid": "0", "sdpMLineIndex": 0},
    {"candidate": "candidate:3 1 udp 41885439 %s 61000 typ relay raddr %s rport 50123" % (RELAY, PUBLIC),
     "sdpMid": "0", "sdpMLineIndex": 0},
]


def no_address(text):
    assert HOST not in text and PUBLIC not in text, text
    assert "typ host" not in text and "typ srflx" not in text, text


@pytest.fixture(scope="module")
def calls_service(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Calls staff")
    env.services = {"callline": {"display_name": "Call Line", "staff_room": staff_room,
                                 "public_entry": True, "public_per_hour": 1000,
                                 "notice": {"en": "Test call line."}}}
    env.calls = {"enabled": True, "turn_uris": ["turn:127.0.0.1:3478?transport=udp"],
                 "turn_shared_secret": SECRET, "turn_ttl_seconds": 600}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"staff_room": staff_room}
    env.services = None
    env.calls = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def staff_send(env, room, type_, content):
    r = requests.put("%s/_matrix/client/v3/rooms/%s/send/%s/%s" % (env.hs_url, q(room), type_, secrets.token_hex(8)),
                     headers=bearer(env.token("staff")), json=content, timeout=30)
    assert r.status_code == 200, r.text


def room_events(env, room, type_):
    r = requests.get("%s/_matrix/client/v3/rooms/%s/messages" % (env.hs_url, q(room)),
                     params={"dir": "b", "limit": 100}, headers=bearer(env.token("staff")), timeout=30)
    assert r.status_code == 200, r.text
    return [e for e in r.json()["chunk"] if e["type"] == type_]


def signal(guest, type_, content):
    return guest.post("/call/signal", {"type": type_, "content": content})


def guest_in_conversation(env, svc):
    g = Guest(env.gw_url)
    g.redeem(service="callline")
    room = join_portal(env, svc["staff_room"], g.pseudonym, expect_service="Call Line")
    # the room is ready for the guest once a send goes through
    g.send("hello")
    return g, room


def guest_of(env, room):
    msgs = wait(lambda: [e for e in room_events(env, room, "m.room.message") if e["sender"].startswith("@guest_")],
                30, "the guest's first message")
    return msgs[0]["sender"]


def test_guest_calls_staff(env, threshold, calls_service):
    g, room = guest_in_conversation(env, calls_service)
    guest_id = guest_of(env, room)

    # Element's rule: the bot is "functional", so guest + staff make two
    fm = room_state(env, "staff", room, "io.element.functional_members")
    assert fm == {"service_members": [env.bot]}, fm
    assert g.get("/session").json()["calls"] is True

    # TURN credentials as coturn checks them, under an opaque name
    r = g.post("/call/turn", {})
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["uris"] == ["turn:127.0.0.1:3478?transport=udp"] and t["ttl"] == 600
    expiry, name = t["username"].split(":")
    assert abs(int(expiry) - (time.time() + 600)) < 30
    assert guest_id not in t["username"] and g.pseudonym not in t["username"]
    want = base64.b64encode(hmac.new(SECRET.encode(), t["username"].encode(), hashlib.sha1).digest()).decode()
    assert t["password"] == want
    assert g.post("/call/turn", {}).json()["username"] != t["username"]

    # the guest rings: staff see the offer with only the relay candidate
    call_id = "c" + secrets.token_hex(6)
    r = signal(g, "m.call.invite", {"call_id": call_id, "party_id": "page1", "version": "1",
                                     "lifetime": 60000, "offer": {"type": "offer", "sdp": sdp("offer")},
                                     "invitee": "@someone:elsewhere", "x_extra": {"ip": HOST}})
    assert r.status_code == 202 and r.json() == {"sent": True}, r.text
    inv = wait(lambda: room_events(env, room, "m.call.invite"), 30, "the invite in the room")[0]
    assert inv["sender"] == guest_id
    c = inv["content"]
    assert c["call_id"] == call_id and c["version"] == "1" and c["lifetime"] == 60000
    assert "x_extra" not in c and "invitee" not in c
    no_address(json.dumps(c))
    assert "typ relay raddr 0.0.0.0 rport 0" in c["offer"]["sdp"]
    assert "a=fmtp:111 maxaveragebitrate=12000;usedtx=1" in c["offer"]["sdp"]

    # ringing again at once is refused (each invite is an audit record)
    r = signal(g, "m.call.invite", {"call_id": "again", "party_id": "page1", "version": "1",
                                     "lifetime": 60000, "offer": {"type": "offer", "sdp": sdp("offer")}})
    assert r.status_code == 429 and r.json()["errcode"] == "TH_LIMIT_EXCEEDED", r.text

    # trickled candidates: only relay goes; all others alone send nothing
    r = signal(g, "m.call.candidates", {"call_id": call_id, "party_id": "page1", "version": "1",
                                         "candidates": CANDS})
    assert r.status_code == 202 and r.json()["sent"] is True
    r = signal(g, "m.call.candidates", {"call_id": call_id, "party_id": "page1", "version": "1",
                                         "candidates": CANDS[:2]})
    assert r.status_code == 202 and r.json()["sent"] is False
    cands = wait(lambda: room_events(env, room, "m.call.candidates"), 30, "candidates in the room")
    assert len(cands) == 1
    assert [x["candidate"] for x in cands[0]["content"]["candidates"]] == [
        "candidate:3 1 udp 41885439 %s 61000 typ relay raddr 0.0.0.0 rport 0" % RELAY]

    # staff answer from their client, with every kind of candidate
    staff_send(env, room, "m.call.answer", {"call_id": call_id, "party_id": "STAFFDEV", "version": "1",
                                            "answer": {"type": "answer", "sdp": sdp("answer")}})
    staff_send(env, room, "m.call.candidates", {"call_id": call_id, "party_id": "STAFFDEV", "version": "1",
                                                "candidates": CANDS})
    ans = g.wait_for(lambda e: e["kind"] == "call" and e["call"]["type"] == "m.call.answer",
                     what="staff's answer")
    assert ans["from"] == {"role": "staff", "name": ""}
    no_address(json.dumps(ans))
    cand = g.wait_for(lambda e: e["kind"] == "call" and e["call"]["type"] == "m.call.candidates",
                      what="staff's candidates")
    assert [x["candidate"] for x in cand["call"]["content"]["candidates"]] == [
        "candidate:3 1 udp 41885439 %s 61000 typ relay raddr 0.0.0.0 rport 0" % RELAY]
    # the guest's own signals never come back to its page
    assert not [e for e in g.seen if e["kind"] == "call" and e["call"]["type"] == "m.call.invite"]

    time.sleep(1.2)
    staff_send(env, room, "m.call.hangup", {"call_id": call_id, "party_id": "STAFFDEV", "version": "1",
                                            "reason": "user_hangup"})
    g.wait_for(lambda e: e["kind"] == "call" and e["call"]["type"] == "m.call.hangup", what="the hangup")

    offered = audit_records(threshold, "call_offered", subject=guest_id)
    assert len(offered) == 1 and offered[0]["actor"] == guest_id
    assert offered[0]["details"] == {"by": "guest", "video": False}
    answered = audit_records(threshold, "call_answered", subject=guest_id)
    assert len(answered) == 1 and answered[0]["actor"] == "@staff:localhost"
    ended = audit_records(threshold, "call_ended", subject=guest_id)
    assert len(ended) == 1, ended
    assert ended[0]["details"]["answered"] is True and ended[0]["details"]["duration_s"] >= 1
    assert ended[0]["reason"] == "user_hangup"
    # never the signals' content
    assert "sdp" not in json.dumps(offered + answered + ended) and RELAY not in json.dumps(ended)


def test_staff_call_declined_and_closed(env, threshold, calls_service):
    g, room = guest_in_conversation(env, calls_service)
    guest_id = guest_of(env, room)
    call_id = "s" + secrets.token_hex(6)
    staff_send(env, room, "m.call.invite", {"call_id": call_id, "party_id": "STAFFDEV", "version": "1",
                                            "lifetime": 60000, "invitee": guest_id,
                                            "offer": {"type": "offer", "sdp": sdp("offer")}})
    inv = g.wait_for(lambda e: e["kind"] == "call" and e["call"]["type"] == "m.call.invite",
                     what="staff's invite")
    no_address(json.dumps(inv))
    assert guest_id not in json.dumps(inv) and ":localhost" not in json.dumps(inv)
    r = signal(g, "m.call.reject", {"call_id": call_id, "party_id": "page2", "version": "1"})
    assert r.status_code == 202, r.text
    wait(lambda: room_events(env, room, "m.call.reject"), 30, "the reject in the room")
    declined = audit_records(threshold, "call_declined", subject=guest_id)
    assert len(declined) == 1 and declined[0]["actor"] == guest_id
    assert declined[0]["details"] == {"by": "guest"}

    # not a signal Threshold carries, or a malformed one
    assert signal(g, "m.room.message", {"call_id": "x", "version": "1"}).status_code == 400
    assert signal(g, "m.call.invite", {"call_id": "x", "version": "1", "lifetime": 60000}).status_code == 400
    assert signal(g, "m.call.hangup", {"call_id": "x", "version": "2"}).status_code == 400

    # after the conversation closed: no call, no credentials, no ringing
    assert g.post("/leave", {}).status_code == 200
    r = signal(g, "m.call.invite", {"call_id": "late", "party_id": "p", "version": "1", "lifetime": 60000,
                                     "offer": {"type": "offer", "sdp": sdp("offer")}})
    assert r.status_code in (401, 410), r.text
