"""The guest gateway end to end: a service, an invitation, a guest in a
browser-like client, staff in Matrix (matrix-nio), a real Synapse.
docs/services.md and docs/gateway-api.md describe what is checked here."""

import json
import time

import pytest
import requests

from conftest import SERVER_NAME
from gateway import API, Guest, api, invite_link_token, join_portal, validated, wait_gateway
from helpers import (audit_records, bearer, ensure_user, invite_permission, q, room_state,
                     staff_room_with_bot, staff_says, bot_reply, wait, wait_for)
from mx import Client, poll, run

from gateway import SCHEMA
SCHEMA_ENDPOINTS = sorted(SCHEMA["endpoints"])

NOTICE_EN = "Helpline run by the test charity. Messages are kept 30 days. Only staff read them."


@pytest.fixture(scope="module")
def service(env):
    """A service "helpline" whose staff room holds staff and the bot; the
    daemon restarted with it configured.  Put back as it was afterwards."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Helpline staff")
    env.services = {"helpline": {
        "display_name": "Test Helpline",
        "staff_room": staff_room,
        "greeting": "Hello, you are through to the test helpline.",
        "notice_version": "3",
        "notice": {"en": NOTICE_EN, "es": "Línea de ayuda de prueba."},
        "public_entry": True,
        "public_per_hour": 1000,
    }}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"staff_room": staff_room}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()




def new_invite(threshold, *extra):
    r = threshold.run("invite", "create", "--service", "helpline", "--json", *extra)
    return json.loads(r.stdout)


def staff_join_portal(env, staff_room, pseudonym, timeout=30):
    """Staff join the guest's conversation room from the staff room's notice."""
    return join_portal(env, staff_room, pseudonym, timeout, expect_service="Test Helpline")


def history(env, room, who="staff"):
    async def read():
        async with Client.for_user(env, who) as c:
            return await c.history(room)
    return run(read())


def no_user_ids(entries):
    text = json.dumps(entries)
    assert ":" + SERVER_NAME not in text, text


def test_page_config_and_notice(env, threshold, service):
    r = api.get(env.gw_url + API + "/page", timeout=10)
    assert r.status_code == 200
    page = r.json()
    assert page["title"] and page["exit_url"].startswith("http")
    assert {"code": "ar", "name": "العربية", "dir": "rtl"} in page["languages"]
    # An API answer carries only what keeps JSON safe; the page's policies
    # are on the page and its files (docs/gateway-api.md, "Headers").
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in r.headers and "X-Frame-Options" not in r.headers
    p = api.get(env.gw_url + "/", timeout=10)
    assert "default-src 'none'" in p.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in p.headers["Content-Security-Policy"]
    assert p.headers["X-Frame-Options"] == "DENY" and p.headers["Cache-Control"] == "no-store"
    r = api.post(env.gw_url + API + "/invitation", json={"service": "helpline"}, timeout=10)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["service"]["display_name"] == "Test Helpline"
    assert j["notice"] == {"version": "3", "languages": {"en": NOTICE_EN, "es": "Línea de ayuda de prueba."}}


def test_invitation_bound_to_first_open(env, threshold, service):
    """The link left in a browser's history is useless once opened: the first
    open binds the invitation to the page's claim (kept in that tab only);
    the same link opened with any other claim, or redeemed without it, gets
    the same answer as a used link, while the claim's holder goes on."""
    import secrets as _s

    def claim():
        return _s.token_urlsafe(24)

    def post(path, body):
        return api.post(env.gw_url + API + path, json=body, timeout=10)

    token = invite_link_token(new_invite(threshold)["link"])
    mine, other = claim(), claim()
    assert post("/invitation", {"invite": token, "claim": mine}).status_code == 200
    # Opened again in the same tab (a reload): still fine.
    assert post("/invitation", {"invite": token, "claim": mine}).status_code == 200
    # From the history, in another tab or by someone else: the used-link answer.
    r = post("/invitation", {"invite": token, "claim": other})
    assert r.status_code == 404 and r.json()["errcode"] == "TH_INVITE_INVALID", r.text
    consent = {"version": "3", "language": "en", "agreed": True}
    for body in ({"invite": token, "consent": consent},
                 {"invite": token, "claim": other, "consent": consent}):
        r = post("/redeem", body)
        assert r.status_code == 404 and r.json()["errcode"] == "TH_INVITE_INVALID", r.text
    assert post("/invitation", {"invite": token, "claim": "short"}).status_code == 400
    r = post("/redeem", {"invite": token, "claim": mine, "consent": consent})
    assert r.status_code == 200, r.text
    assert post("/invitation", {"invite": token, "claim": mine}).status_code == 404

    # Two uses: two tabs may bind one each; a third cannot, nor can a redeem
    # without a claim take a bound use.
    token = invite_link_token(new_invite(threshold, "--uses", "2")["link"])
    a, b = claim(), claim()
    assert post("/invitation", {"invite": token, "claim": a}).status_code == 200
    r = post("/redeem", {"invite": token, "consent": consent})  # a use is still free
    assert r.status_code == 200, r.text
    assert post("/invitation", {"invite": token, "claim": b}).status_code == 404
    assert post("/redeem", {"invite": token, "consent": consent}).status_code == 404
    assert post("/redeem", {"invite": token, "claim": a, "consent": consent}).status_code == 200


def test_conversation_end_to_end(env, threshold, service):
    """A guest redeems an invitation and writes; staff see it from the
    pseudonym and reply; the guest's feed has the reply once, in order."""
    inv = new_invite(threshold)
    assert inv["uses"] == 1 and inv["link"].startswith(env.gw_url + "/#invite=")
    guest = Guest(env.gw_url)
    started = guest.redeem(invite=invite_link_token(inv["link"]))
    assert started["resume_code"]
    greeting = guest.wait_for(lambda e: e["kind"] == "notice", what="the greeting")
    assert greeting["body"].startswith("Hello, you are through")
    consent = audit_records(threshold, "consent_recorded")
    assert any(r["details"]["notice_version"] == "3" and r["details"]["entry"] == "invitation"
               for r in consent), consent

    portal = staff_join_portal(env, service["staff_room"], guest.pseudonym)
    local_id = guest.send("Hello, I need some help")
    mine = guest.wait_for(lambda e: e.get("local_id") == local_id, what="the guest's own message")
    assert mine["from"] == {"role": "self", "name": guest.pseudonym}

    # Staff see it, sent by the guest under the pseudonym.
    async def staff_side():
        async with Client.for_user(env, "staff") as s:
            async def msg():
                for ev in await s.history(portal):
                    if ev.get("content", {}).get("body") == "Hello, I need some help":
                        return ev
            ev = await poll(msg, timeout=30, what="the guest's message in the portal room")
            prof = await s.profile(ev["sender"])
            await s.send_text(portal, "Hi, I'm here. How can I help?")
            create = next(e for e in await s.history(portal) if e["type"] == "m.room.create")
            return ev, prof, create
    ev, prof, create = run(staff_side())
    # Synapse keeps the mark a retried createRoom looks for (appservice/outbox.c).
    assert create["content"].get("org.threshold.outbox_action", "").startswith("th"), create
    assert ev["sender"].startswith("@guest_")
    assert prof.displayname == guest.pseudonym

    # The guest made its own room (nobody invited it: the homeserver would
    # refuse that), pinned to room version 10; the bot ends at 100, the guest at 0.
    guest_id = ev["sender"]
    assert create["sender"] == guest_id and create["content"].get("room_version") == "10", create
    levels = room_state(env, "staff", portal, "m.room.power_levels")
    assert levels["users"][env.bot] == 100 and levels["users"][guest_id] == 0, levels
    members = [e for e in history(env, portal)
               if e["type"] == "m.room.member" and e.get("state_key") == guest_id]
    assert members and all(e["content"]["membership"] != "invite" for e in members), members
    assert wait_for("the guest's invites blocked", lambda: invite_permission(env, guest_id)) == "block"

    reply = guest.wait_for(lambda e: e.get("body") == "Hi, I'm here. How can I help?", what="the reply")
    assert reply["from"]["role"] == "staff"
    # once, in order, with nothing but ids that grow
    guest.poll(timeout_ms=500)
    ids = [e["id"] for e in guest.seen]
    assert ids == sorted(set(ids)), ids
    assert [e["body"] for e in guest.seen].count("Hi, I'm here. How can I help?") == 1
    no_user_ids(guest.seen)

    # A reconnect from an older position replays exactly what followed it.
    again = Guest(env.gw_url)
    again.session = guest.session
    again.since = greeting["id"]
    j = again.poll(timeout_ms=0)
    assert [e["id"] for e in j["events"]] == [i for i in ids if i > greeting["id"]]

    # Resuming on another device with the code reads the same conversation.
    r = api.post(env.gw_url + API + "/resume", json={"resume_code": started["resume_code"].lower()},
                      timeout=10)
    assert r.status_code == 200, r.text
    other = Guest(env.gw_url)
    other.session = r.json()["session"]
    assert other.get("/session").json()["pseudonym"] == guest.pseudonym


def test_bad_invitations_are_one_answer(env, threshold, service):
    used = new_invite(threshold)
    Guest(env.gw_url).redeem(invite=invite_link_token(used["link"]))
    expired = new_invite(threshold, "--expires", "1s")
    time.sleep(1.5)
    answers = []
    for token in (invite_link_token(used["link"]), invite_link_token(expired["link"]),
                  "A" * 32, "not-a-token"):
        for path in ("/invitation", "/redeem"):
            body = {"invite": token, "consent": {"version": "3", "language": "en", "agreed": True}}
            r = api.post(env.gw_url + API + path, json=body, timeout=10)
            answers.append((r.status_code, r.json()))
    assert len({json.dumps(a, sort_keys=True) for a in answers}) == 1, answers
    assert answers[0][0] == 404 and answers[0][1]["errcode"] == "TH_INVITE_INVALID"


def test_consent_is_required(env, threshold, service):
    inv = new_invite(threshold)
    token = invite_link_token(inv["link"])
    for consent in ({"version": "3", "language": "en", "agreed": False},
                    {"version": "2", "language": "en", "agreed": True},
                    {"version": "3", "language": "<b>", "agreed": True}):
        r = api.post(env.gw_url + API + "/redeem", json={"invite": token, "consent": consent}, timeout=10)
        assert r.status_code == 400, r.text
        assert r.json()["errcode"] == "TH_BAD_REQUEST"
    # none of those used the invitation up
    assert api.post(env.gw_url + API + "/invitation", json={"invite": token}, timeout=10).status_code == 200


def test_guests_are_kept_apart(env, threshold, service):
    """Two guests: neither's feed holds the other's conversation; a guest
    cannot name another room; a wrong or missing token reads nothing."""
    a, b = Guest(env.gw_url), Guest(env.gw_url)
    a.redeem(service="helpline")
    b.redeem(service="helpline")
    portal_b = staff_join_portal(env, service["staff_room"], b.pseudonym)
    staff_join_portal(env, service["staff_room"], a.pseudonym)
    # a names b's room: the field is not part of the API and changes nothing
    r = a.post("/send", {"local_id": "x1", "body": "for a's room only", "room_id": portal_b})
    deadline = time.monotonic() + 30
    while r.status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.5)
        r = a.post("/send", {"local_id": "x1", "body": "for a's room only", "room_id": portal_b})
    assert r.status_code == 202, r.text
    a.wait_for(lambda e: e.get("local_id") == "x1")
    staff_says(env, portal_b, "only for b")
    b.wait_for(lambda e: e.get("body") == "only for b")
    a.poll(timeout_ms=1000)
    assert not any(e.get("body") == "only for b" for e in a.seen)
    assert not any(e.get("body") == "for a's room only" for e in b.seen)
    assert not any(ev.get("content", {}).get("body") == "for a's room only" for ev in history(env, portal_b))
    for headers in ({}, {"Authorization": "Bearer " + "A" * 32}, {"Authorization": "Bearer " + b.session[::-1]}):
        r = api.get(env.gw_url + API + "/feed", params={"timeout_ms": 0}, headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["errcode"] == "TH_SESSION_INVALID", r.text


def test_staff_commands_in_the_portal(env, threshold, service):
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    g.send("hello")
    note = staff_says(env, portal, "!threshold note she mentioned her brother")
    assert "never sees it" in bot_reply(env, "staff", portal, note)["content"]["body"]
    ensure_colleague = env.users.get("colleague") or env.add_user("colleague")
    # a stranger cannot be handed the conversation
    ho = staff_says(env, portal, "!threshold handover @colleague:" + SERVER_NAME)
    assert "not staff" in bot_reply(env, "staff", portal, ho)["content"]["body"]
    close = staff_says(env, portal, "!threshold close")
    assert "closed" in bot_reply(env, "staff", portal, close)["content"]["body"]
    closed = g.wait_for(lambda e: e["kind"] == "closed", what="the closed notice")
    assert "closed" in closed["body"]
    assert not any("brother" in (e.get("body") or "") for e in g.seen), g.seen
    assert not any((e.get("body") or "").startswith("!threshold") for e in g.seen), g.seen
    r = g.post("/send", {"local_id": "late", "body": "are you there?"})
    assert r.status_code == 410 and r.json()["errcode"] == "TH_CLOSED"
    assert g.get("/session").json()["state"] == "closed"
    recs = audit_records(threshold, "conversation_closed")
    assert any(rec.get("actor") == "@staff:" + SERVER_NAME for rec in recs), recs
    assert ensure_colleague


def test_taken_down_in_element_leaves_the_page(env, threshold, service):
    """Staff remove a message in Element (their own sent by mistake, and one
    the guest wrote): the guest's feed takes both down, live and on replay."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    lid = g.send("my number is 07700 900123")
    mine = g.wait_for(lambda e: e.get("local_id") == lid, what="the guest's own message")
    wrong = staff_says(env, portal, "Note for Sam Jones, case 4471")
    shown = g.wait_for(lambda e: e.get("body") == "Note for Sam Jones, case 4471", what="staff's message")

    def guest_event():
        for ev in history(env, portal):
            if ev.get("content", {}).get("org.threshold.local_id") == lid:
                return ev["event_id"]
    theirs = wait(guest_event, 30, "the guest's message in the room")

    async def redact():
        async with Client.for_user(env, "staff") as s:
            for event_id in (wrong, theirs):
                r = await s.nio.room_redact(portal, event_id, reason="sent in error")
                assert getattr(r, "event_id", None), r
    run(redact())
    gone = {e["entry"] for e in [g.wait_for(lambda e: e["kind"] == "removed" and e["entry"] == shown["id"],
                                            what="the take-down of staff's message"),
                                 g.wait_for(lambda e: e["kind"] == "removed" and e["entry"] == mine["id"],
                                            what="the take-down of the guest's message")]}
    assert gone == {shown["id"], mine["id"]}

    # A page opened now (another device, a reload) shows neither.
    again = Guest(env.gw_url)
    again.session = g.session
    again.poll(timeout_ms=0)
    text = json.dumps(again.seen)
    assert "Sam Jones" not in text and "07700" not in text, again.seen
    replayed = {e["id"]: e for e in again.seen}
    assert replayed[shown["id"]].get("removed") is True
    assert replayed[shown["id"]]["from"]["role"] == "staff"
    assert replayed[mine["id"]].get("removed") is True and replayed[mine["id"]]["local_id"] == lid


def test_staff_invite_command(env, threshold, service):
    cmd = staff_says(env, service["staff_room"], "!threshold invite --uses 2 --expires 2h")
    body = bot_reply(env, "staff", service["staff_room"], cmd)["content"]["body"]
    assert "for 2 uses" in body and "2 hours" in body, body
    token = invite_link_token(body.strip().splitlines()[-1])
    Guest(env.gw_url).redeem(invite=token)
    Guest(env.gw_url).redeem(invite=token)
    r = api.post(env.gw_url + API + "/invitation", json={"invite": token}, timeout=10)
    assert r.status_code == 404


def test_erase_me(env, threshold, service):
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    lid = g.send("my address is 1 Example Street")
    g.wait_for(lambda e: e.get("local_id") == lid)
    guest_id = next(ev["sender"] for ev in history(env, portal)
                    if ev.get("content", {}).get("body") == "my address is 1 Example Street")
    r = g.post("/erase", {"confirm": False})
    assert r.status_code == 400
    r = g.post("/erase", {"confirm": True})
    assert r.status_code == 202 and r.json()["state"] == "erasing", r.text
    receipt = r.json()["receipt"]
    # Without homeserver.admin_token_file the job cannot delete the media or
    # the room: it ends "incomplete", and the page says so (test_erasure.py).
    deadline = time.monotonic() + 60
    while True:
        st = api.get(env.gw_url + API + "/erasure/" + receipt, timeout=30)
        assert st.status_code == 200, st.text
        if st.json()["state"] != "erasing":
            break
        assert time.monotonic() < deadline, st.text
        time.sleep(0.2)
    assert st.json() == {"state": "incomplete", "receipt": receipt}, st.text
    assert api.get(env.gw_url + API + "/erasure/ABCD-EFGH-JKLM", timeout=30).status_code == 404

    def erased():
        evs = history(env, portal)
        gone = not any("Example Street" in json.dumps(ev.get("content", {})) for ev in evs)
        notice = any("asked for their data to be deleted" in ev.get("content", {}).get("body", "")
                     for ev in evs)
        left = any(ev.get("type") == "m.room.member" and ev.get("state_key") == guest_id
                   and ev["content"].get("membership") == "leave" for ev in evs)
        return gone and notice and left
    deadline = time.monotonic() + 30
    while not erased():
        assert time.monotonic() < deadline, json.dumps(history(env, portal), indent=1)[-3000:]
        time.sleep(0.5)
    assert g.get("/feed", params={"timeout_ms": 0}).status_code == 401
    deadline = time.monotonic() + 30
    while True:  # the homeserver account is deactivated too
        r = requests.get("%s/_synapse/admin/v2/users/%s" % (env.hs_url, q(guest_id)),
                         headers=bearer(env.token("admin")), timeout=30)
        if r.status_code == 200 and r.json().get("deactivated"):
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert audit_records(threshold, "data_erased", subject=guest_id)
    shown = json.loads(threshold.run("guest", "show", guest_id, "--json").stdout)
    assert shown["state"] == "erased" and shown["pseudonym"] == "", shown


def test_bad_requests(env, threshold, service):
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    for body, code in ((b"{not json", 400), (b"[]", 400), (b"x" * 70000, 413)):
        r = api.post(env.gw_url + API + "/send", data=body, timeout=10,
                          headers={"Authorization": "Bearer " + g.session, "Content-Type": "application/json"})
        assert r.status_code == code, (body[:20], r.status_code, r.text)
    r = g.post("/send", {"local_id": "bad id!", "body": "x"})
    assert r.status_code == 400 and "local_id" in r.json()["error"]
    r = g.post("/send", {"local_id": "long", "body": "x" * 5000})
    assert r.status_code == 413
    assert api.get(env.gw_url + API + "/nope", timeout=10).status_code == 404
    assert api.get(env.gw_url + API + "/send", timeout=10).status_code == 405
    assert requests.get(env.gw_url + "/../../etc/passwd", timeout=10).status_code in (400, 404)


def test_guest_leaves(env, threshold, service):
    """End chat: staff are told, the guest leaves the room, the session is
    good for nothing but deleting their data."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    g.send("thanks, bye")
    r = g.post("/leave", {})
    assert r.status_code == 200 and r.json() == {}

    def told():
        evs = history(env, portal)
        notice = any(ev.get("content", {}).get("body") == g.pseudonym + " has left the conversation."
                     for ev in evs)
        left = any(ev.get("type") == "m.room.member" and ev.get("state_key", "").startswith("@guest_")
                   and ev["content"].get("membership") == "leave" for ev in evs)
        return notice and left
    deadline = time.monotonic() + 30
    while not told():
        assert time.monotonic() < deadline, "staff never saw the guest leave"
        time.sleep(0.5)
    r = g.get("/session")
    assert r.status_code == 200 and r.json()["erase_only"] is True, r.text
    assert g.post("/leave", {}).status_code == 401
    assert g.post("/send", {"local_id": "again", "body": "hello?"}).status_code == 401
    assert g.get("/feed", params={"timeout_ms": 0}).status_code == 401


@pytest.mark.parametrize("how", ["kick", "ban"])
def test_staff_removes_the_guest(env, threshold, service, how):
    """Staff kick (or ban) the guest from their conversation room in Matrix:
    the page waiting on its feed gets the closed entry, the session and the
    resume code are good for nothing but deleting their data, and the close
    is recorded."""
    import threading
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    g.send("hello")
    g.wait_for(lambda e: e.get("kind") == "message" and e.get("body") == "hello", what="the echo")
    while g.poll(timeout_ms=1500)["events"]:  # the feed quiet before the kick
        pass

    async def members():
        async with Client.for_user(env, "staff") as c:
            return await c.joined_members(portal)
    guest_id = [m for m in run(members()) if m.startswith("@guest_")][0]
    parked = {}

    def park():
        parked["r"] = g.get("/feed", params={"since": g.since, "timeout_ms": 25000})
    t = threading.Thread(target=park)
    t.start()
    time.sleep(1.0)  # the poll is parked

    async def remove():
        async with Client.for_user(env, "staff") as c:
            if how == "kick":
                r = await c.nio.room_kick(portal, guest_id, reason="abusive")
            else:
                r = await c.nio.room_ban(portal, guest_id, reason="abusive")
            assert not hasattr(r, "status_code") or not r.status_code, r
    run(remove())
    t.join(40)
    r = parked["r"]
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["state"] == "closed", j
    assert [e for e in j["events"] if e["kind"] == "closed"], j
    r = g.get("/session")
    assert r.status_code == 200 and r.json()["erase_only"] is True, r.text
    assert g.post("/send", {"local_id": "after", "body": "still here?"}).status_code == 401
    assert g.get("/feed", params={"timeout_ms": 0}).status_code == 401
    if g.resume_code:
        r = api.post(env.gw_url + API + "/resume", json={"resume_code": g.resume_code}, timeout=30)
        assert r.status_code == 200, r.text
        again = Guest(env.gw_url)
        again.session = r.json()["session"]
        assert again.get("/session").json()["erase_only"] is True
        assert again.post("/send", {"local_id": "x", "body": "back?"}).status_code == 401
    closed = [rec for rec in audit_records(threshold, kind="conversation_closed")
              if rec.get("subject") == guest_id]
    assert len(closed) == 1 and closed[0]["actor"] == env.users["staff"][0], closed


def test_group_invitation(env, threshold, service):
    """A group invitation puts two guests into one moderated group room,
    where each sees the other only by pseudonym."""
    from helpers import make_group
    group = make_group(env)
    cmd = staff_says(env, group, "!threshold invite --uses 2")
    body = bot_reply(env, "staff", group, cmd)["content"]["body"]
    assert body.startswith("Invitation to this group"), body
    token = invite_link_token(body.strip().splitlines()[-1])
    a, b = Guest(env.gw_url), Guest(env.gw_url)
    a.redeem(invite=token)
    b.redeem(invite=token)
    assert a.get("/session").json()["state"] == "open"
    la = a.send("hello from a")
    a.wait_for(lambda e: e.get("local_id") == la, what="a's own message")
    seen_by_b = b.wait_for(lambda e: e.get("body") == "hello from a", what="a's message in b's feed")
    assert seen_by_b["from"] == {"role": "guest", "name": a.pseudonym}
    staff_says(env, group, "welcome both")
    for g in (a, b):
        e = g.wait_for(lambda e: e.get("body") == "welcome both", what="staff's welcome")
        assert e["from"]["role"] == "staff"
        no_user_ids(g.seen)
    # the room holds both guests; neither got a room of their own
    senders = {ev["sender"] for ev in history(env, group)
               if ev.get("content", {}).get("body") in ("hello from a",)}
    assert len(senders) == 1 and next(iter(senders)).startswith("@guest_")

    # In the group, and still unreachable: right after, a stranger's invite
    # of the guest is refused by the homeserver itself.
    a_id = next(iter(senders))
    assert invite_permission(env, a_id) == "block"
    ensure_user(env, "nadia")
    r = requests.post(env.hs_url + "/_matrix/client/v3/createRoom", headers=bearer(env.token("nadia")),
                      json={"name": "hi", "invite": [a_id]}, timeout=30)
    assert r.status_code == 403 and r.json()["errcode"] == "M_INVITE_BLOCKED", r.text

    # a deletes their data: b's page takes a's words down as the redactions arrive
    r = a.post("/erase", {"confirm": True})
    assert r.status_code == 202, r.text
    b.wait_for(lambda e: e["kind"] == "removed" and e["entry"] == seen_by_b["id"],
               what="a's message taken off b's page after a's erasure")
    fresh = Guest(env.gw_url)
    fresh.session = b.session
    fresh.poll(timeout_ms=0)
    assert "hello from a" not in json.dumps(fresh.seen), fresh.seen


def test_invitation_qr_code(env, threshold, service, tmp_path):
    """!threshold invite --qr: the bot answers with the link, then a QR code
    image of that same link (read back with zbarimg); the CLI writes one too."""
    import subprocess
    cmd = staff_says(env, service["staff_room"], "!threshold invite --qr")
    link = bot_reply(env, "staff", service["staff_room"], cmd)["content"]["body"].strip().splitlines()[-1]

    async def image():
        async with Client.for_user(env, "staff") as s:
            async def find():
                for ev in await s.history(service["staff_room"]):
                    c = ev.get("content", {})
                    rel = c.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
                    if ev.get("sender") == env.bot and c.get("msgtype") == "m.image" and rel == cmd:
                        return c
            return await poll(find, timeout=30, what="the QR code image")
    content = run(image())
    assert content["info"]["mimetype"] == "image/png"
    server, media_id = content["url"][len("mxc://"):].split("/", 1)
    r = requests.get("%s/_matrix/client/v1/media/download/%s/%s" % (env.hs_url, server, media_id),
                     headers=bearer(env.token("staff")), timeout=30)
    if r.status_code == 404:  # homeservers without authenticated media
        r = requests.get("%s/_matrix/media/v3/download/%s/%s" % (env.hs_url, server, media_id), timeout=30)
    assert r.status_code == 200, r.text
    png = tmp_path / "matrix.png"
    png.write_bytes(r.content)
    out = subprocess.run(["zbarimg", "-q", "--raw", str(png)], capture_output=True, text=True)
    assert out.stdout.strip() == link, (out.stdout, link)

    cli_png = tmp_path / "cli.png"
    r = threshold.run("invite", "create", "--service", "helpline", "--qr", str(cli_png))
    assert (cli_png.stat().st_mode & 0o777) == 0o600
    out = subprocess.run(["zbarimg", "-q", "--raw", str(cli_png)], capture_output=True, text=True)
    assert out.stdout.strip() == r.stdout.strip()


def _png_with_text(width=1, height=1):
    """A grey PNG with tEXt, iTXt and eXIf chunks (1x1 unless a bomb is asked for)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"tEXt", b"Location\x0051.5N 0.1W secret")
            + chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta>secret</x:xmpmeta>")
            + chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08GPS secret")
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


# A real 16x8 baseline JPEG (left half red, right half blue), as libjpeg wrote it.
from media_samples import JPEG_16X8  # noqa: E402  (a real 16x8 JPEG)


def _jpeg_with_exif():
    """A real JPEG as a phone makes it: EXIF with a GPS block (TIFF IFD0 ->
    GPSInfo -> GPSLatitudeRef and a processing-method string), an XMP
    packet and a comment, all readable by a decoder that skips them."""
    import base64
    import struct
    jpeg = base64.b64decode(JPEG_16X8)
    gps_text = b"GPS 51.5N 0.1W secret\x00"
    tiff = bytearray(b"II*\x00\x08\x00\x00\x00")
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x8825, 4, 1, 26) + struct.pack("<I", 0)
    tiff += struct.pack("<H", 2) + struct.pack("<HHI", 0x0001, 2, 2) + b"N\x00\x00\x00"
    tiff += struct.pack("<HHII", 0x001B, 7, len(gps_text), 26 + 2 + 24 + 4) + struct.pack("<I", 0)
    tiff += gps_text
    seg = lambda m, d: b"\xff" + bytes([m]) + struct.pack(">H", len(d) + 2) + d
    return (jpeg[:2] + seg(0xE1, b"Exif\x00\x00" + bytes(tiff))
            + seg(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>secret</x:xmpmeta>")
            + seg(0xFE, b"taken on a phone, secret") + jpeg[2:])


def _webp_with_exif():
    """A 1x1 lossless WebP in the extended format, saying it carries EXIF and
    XMP, and carrying both (RFC 9649's RIFF chunks)."""
    import base64
    import struct
    vp8l = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")[12:]

    def chunk(cc, data):
        return cc + struct.pack("<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")
    body = (b"WEBP" + chunk(b"VP8X", bytes([0x0c]) + bytes(9)) + vp8l
            + chunk(b"EXIF", b"Exif\0\0GPS 51.5N 0.1W secret") + chunk(b"XMP ", b"<x>secret</x>"))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunks(data):
    """(FourCC, VP8X flags or None) of each chunk; the RIFF size checked."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", data[:16]
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    i, out = 12, []
    while i < len(data):
        n = int.from_bytes(data[i + 4:i + 8], "little")
        out.append((data[i:i + 4], data[i + 8] if data[i:i + 4] == b"VP8X" else None))
        i += 8 + n + (n & 1)
    return out


def test_guest_sends_pictures(env, threshold, service):
    """A guest's picture reaches staff as an m.image made afresh from its
    pixels, so none of its location metadata (EXIF GPS, XMP, PNG text, WebP
    EXIF/XMP) survives, under a neutral name with the extension of what the
    bytes are, whatever the device called it; an HTML page behind %PDF-
    (PDFs are off) and other kinds are refused with a clear error; a picture
    that declares too many pixels is refused before it is decoded; the size
    cap holds."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    g.send("here is a photo")  # waits until the room is ready

    def upload(data, local_id, name):
        return api.post(env.gw_url + API + "/upload", params={"local_id": local_id, "name": name},
                        data=data, headers={"Authorization": "Bearer " + g.session,
                                            "Content-Type": "application/octet-stream"}, timeout=30)
    for data, lid, name in ((_png_with_text(), "p1", "map.png"),
                            (_jpeg_with_exif(), "j1", "../IMG_20261203_081500.jpg"),
                            (_webp_with_exif(), "w1", "street.webp")):
        assert b"secret" in data
        r = upload(data, lid, name)
        assert r.status_code == 202, r.text
        mine = g.wait_for(lambda e, lid=lid: e.get("local_id") == lid, what="the picture's echo")
        assert mine["body"].startswith("[picture: ")
    r = upload(b"MZ\x90\x00 not a picture", "x1", "setup.exe")
    assert r.status_code == 415 and r.json()["errcode"] == "TH_UNSUPPORTED"
    # An HTML application behind "%PDF-", named as staff once received it.
    polyglot = b"%PDF-1.4\n<html><hta:application/><script>new ActiveXObject('WScript.Shell')</script></html>"
    r = upload(polyglot, "h1", "Referral form.hta")
    assert r.status_code == 415 and r.json()["errcode"] == "TH_UNSUPPORTED", r.text
    assert "Only photos and pictures (JPEG, PNG, WebP)" in r.json()["error"]
    r = upload(PDF, "d1", "leaflet.pdf")  # a real PDF, while PDFs are off
    assert r.status_code == 415 and r.json()["errcode"] == "TH_UNSUPPORTED", r.text
    r = upload(b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
               "g1", "wave.gif")
    assert r.status_code == 415 and r.json()["errcode"] == "TH_UNSUPPORTED", r.text
    # A PNG a few hundred bytes long that declares 30000 x 30000 pixels.
    r = upload(_png_with_text(30000, 30000), "bomb", "bomb.png")
    assert r.status_code == 413 and r.json()["errcode"] == "TH_TOO_LARGE", r.text
    assert "too many pixels" in r.json()["error"]
    r = upload(b"\xff\xd8\xff" + b"\x00" * 64, "broken", "broken.jpg")
    assert r.status_code == 415 and r.json()["errcode"] == "TH_DAMAGED", r.text
    r = upload(b"\xff\xd8\xff" + b"\x00" * (4 * 1024 * 1024 + 10), "big", "big.jpg")
    assert r.status_code == 413

    timeline = history(env, portal)
    assert "IMG_2026" not in json.dumps(timeline) and ".hta" not in json.dumps(timeline)
    images = [ev for ev in timeline if ev.get("content", {}).get("msgtype") == "m.image"]
    assert sorted(ev["content"]["body"] for ev in images) == ["Picture 1.png", "Picture 2.jpg",
                                                             "Picture 3.webp"], images
    assert not [ev for ev in timeline if ev.get("content", {}).get("msgtype") == "m.file"]
    for ev in images:
        server, media_id = ev["content"]["url"][len("mxc://"):].split("/", 1)
        r = requests.get("%s/_matrix/client/v1/media/download/%s/%s" % (env.hs_url, server, media_id),
                         headers=bearer(env.token("staff")), timeout=30)
        if r.status_code == 404:
            r = requests.get("%s/_matrix/media/v3/download/%s/%s" % (env.hs_url, server, media_id), timeout=30)
        assert r.status_code == 200, r.text
        for marker in (b"secret", b"51.5N", b"Exif", b"xmpmeta", b"ns.adobe.com", b"tEXt", b"Location"):
            assert marker not in r.content, (marker, r.content[:200])
        ext = ev["content"]["body"].rsplit(".", 1)[1]
        magic = {"png": b"\x89PNG", "jpg": b"\xff\xd8\xff", "webp": b"RIFF"}[ext]
        assert r.content.startswith(magic), (ext, r.content[:8])
        assert ev["content"]["info"]["mimetype"] == {"png": "image/png", "jpg": "image/jpeg",
                                                     "webp": "image/webp"}[ext]
        if ext == "jpg":
            markers = jpeg_markers(r.content)
            assert not [m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE], markers
        if ext == "webp":
            chunks = [c for c, _ in webp_chunks(r.content)]
            assert b"EXIF" not in chunks and b"XMP " not in chunks, chunks


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
       b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")


def jpeg_markers(data):
    """The markers of a JPEG's segments up to its scan (T.81 B.1.1.2)."""
    assert data[:2] == b"\xff\xd8", data[:4]
    i, markers = 2, []
    while i + 4 <= len(data):
        assert data[i] == 0xFF, (i, data[i:i + 4])
        marker = data[i + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise AssertionError("no scan in the JPEG")


def test_staff_send_pictures_and_files(env, threshold, service):
    """Staff send a photo with EXIF GPS and a PDF leaflet from Matrix: the
    guest's feed shows both as attachments (no mxc URI, no server, no user
    id); the gateway serves the PDF as a download, byte for byte, and the
    photo as a JPEG without its metadata; nobody else can name them."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    g.send("could you send me the leaflet?")
    photo = _jpeg_with_exif()
    assert 0xE1 in jpeg_markers(photo) and 0xFE in jpeg_markers(photo)

    async def staff_sends():
        async with Client.for_user(env, "staff") as s:
            await s.send_file(portal, photo, "where we are.jpg", "image/jpeg", "m.image")
            await s.send_file(portal, PDF, "leaflet.pdf", "application/pdf", "m.file",
                              extra={"filename": "leaflet.pdf", "body": "Our opening hours"})
    run(staff_sends())
    pic = g.wait_for(lambda e: (e.get("attachment") or {}).get("name") == "where we are.jpg",
                     what="the photo's attachment")
    doc = g.wait_for(lambda e: (e.get("attachment") or {}).get("name") == "leaflet.pdf",
                     what="the leaflet's attachment")
    assert pic["from"]["role"] == "staff" and pic["kind"] == "message"
    assert pic["attachment"] == {"kind": "picture", "name": "where we are.jpg", "mimetype": "image/jpeg",
                                 "size": len(photo)}, pic
    assert pic["body"] == "[picture: where we are.jpg]"
    assert doc["attachment"] == {"kind": "file", "name": "leaflet.pdf", "mimetype": "application/pdf",
                                 "size": len(PDF), "caption": "Our opening hours"}, doc
    seen = json.dumps(g.seen)
    assert "mxc" not in seen and "/" + SERVER_NAME not in seen, seen
    no_user_ids(g.seen)

    r = g.get("/media/%d" % doc["id"])
    assert r.status_code == 200, r.text
    assert r.content == PDF
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"] == 'attachment; filename="leaflet.pdf"'
    r = g.get("/media/%d" % pic["id"])
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/jpeg"
    assert "Content-Disposition" not in r.headers
    markers = jpeg_markers(r.content)
    assert not [m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE], markers  # no EXIF, XMP, comment
    assert 0xDB in markers and 0xC4 in markers, markers  # made afresh: its own tables
    assert b"secret" not in r.content and b"Exif" not in r.content

    # Anything else: the same 404, whoever asks; no session, 401.
    unknown = g.get("/media/999999")
    assert unknown.status_code == 404
    greeting = next(e for e in g.seen if e["kind"] == "notice")
    for path in ("/media/%d" % greeting["id"], "/media/abc", "/media/-1", "/media/1.0",
                 "/media/" + "9" * 30, "/media/%d%%00" % pic["id"]):
        r = g.get(path)
        assert (r.status_code, r.json()) == (404, unknown.json()), (path, r.text)
    other = Guest(env.gw_url)
    other.redeem(service="helpline")
    for entry in (pic, doc):
        r = other.get("/media/%d" % entry["id"])
        assert (r.status_code, r.json()) == (404, unknown.json()), r.text
    r = api.get(env.gw_url + API + "/media/%d" % pic["id"], timeout=10)
    assert r.status_code == 401 and r.json()["errcode"] == "TH_SESSION_INVALID"
    assert "mxc://" not in threshold.log_since_start()


def test_guest_asks_for_help(env, threshold, service):
    """POST /help: one tap, confirmed; without a session, 401.  (The alerts
    themselves are tests/integration/test_cases.py's.)"""
    g = Guest(env.gw_url)
    r = g.post("/help", {})
    assert r.status_code == 401, r.text
    g.redeem(service="helpline")
    r = g.post("/help", {})
    assert r.status_code == 200 and r.json()["received"] is True and r.json()["repeat"] is False, r.text
    r = g.post("/help", {})
    assert r.json() == {"received": True, "repeat": True}, r.text
    r = g.get("/session")
    assert r.json()["hours"] == {"open": True, "signposting": {}}, r.text


def test_calls_off_by_default(env, threshold, service):
    """calls.enabled is false here: no call endpoint does anything, and the
    page is told (docs/calls.md; the calls themselves: test_calls.py)."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    assert g.get("/session").json()["calls"] is False
    for what in ("signal", "turn", "ask"):
        r = g.post("/call/" + what, {"type": "m.call.hangup", "content": {"call_id": "x", "version": "1"}})
        assert r.status_code == 404 and r.json()["errcode"] == "TH_NOT_FOUND", r.text


def test_every_answer_matched_the_schema(env, threshold, service):
    """Runs last: the answers above were checked against the schema as they
    came; make sure that happened for every endpoint and most statuses."""
    seen = {(m, p) for m, p, _ in validated}
    for key in SCHEMA_ENDPOINTS:
        method, path = key.split(" ", 1)
        assert (method, path) in seen, "no test exercised %s" % key
    assert {s for _, _, s in validated} >= {200, 202, 400, 401, 404, 405, 410, 413, 415}


def test_what_the_guest_sees(env, threshold, service):
    """Staff work in Element as usual: a note, its edit, a reply and a thread
    reply to it, an ordinary message and its edit, a reply to the guest.  The
    guest's page shows the message once with its new words, the reply without
    the quote (which names the guest by user id), none of the note's
    relatives, and no user id anywhere (docs/policy.md, "What a guest sees")."""
    g = Guest(env.gw_url)
    g.redeem(service="helpline")
    portal = staff_join_portal(env, service["staff_room"], g.pseudonym)
    lid = g.send("I need some advice")
    mine = g.wait_for(lambda e: e.get("local_id") == lid, what="the guest's own message")

    def guest_event():
        for ev in history(env, portal):
            if ev.get("content", {}).get("org.threshold.local_id") == lid:
                return ev
    theirs = wait(guest_event, 30, "the guest's message in the room")

    async def staff_work():
        async with Client.for_user(env, "staff") as s:
            async def say(content):
                r = await s.nio.room_send(portal, "m.room.message", content)
                assert getattr(r, "event_id", None), r
                return r.event_id
            note = await say({"msgtype": "m.text", "body": "!threshold note worried about her partner"})
            await say({"msgtype": "m.text", "body": "* !threshold note worried about her partner Dan",
                       "m.new_content": {"msgtype": "m.text",
                                         "body": "!threshold note worried about her partner Dan"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": note}})
            staff_id = "@staff:" + SERVER_NAME
            await say({"msgtype": "m.text",
                       "body": "> <%s> !threshold note worried about her partner\n\nagreed, call Dan's "
                               "probation officer" % staff_id,
                       "m.relates_to": {"m.in_reply_to": {"event_id": note}}})
            await say({"msgtype": "m.text", "body": "thread: Dan has a record",
                       "m.relates_to": {"rel_type": "m.thread", "event_id": note, "is_falling_back": True,
                                        "m.in_reply_to": {"event_id": note}}})
            hello = await say({"msgtype": "m.text", "body": "Hello, I am Ana from the helpline"})
            await say({"msgtype": "m.text", "body": "* Hello, I am Ana from the test helpline",
                       "m.new_content": {"msgtype": "m.text",
                                         "body": "Hello, I am Ana from the test helpline"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": hello}})
            await say({"msgtype": "m.text",
                       "body": "> <%s> I need some advice\n\nOf course, tell me more." % theirs["sender"],
                       "format": "org.matrix.custom.html",
                       "formatted_body": "<mx-reply><blockquote><a href=\"https://matrix.to/#/%s\">%s"
                                         "</a><br>I need some advice</blockquote></mx-reply>Of course, "
                                         "tell me more." % (theirs["sender"], theirs["sender"]),
                       "m.relates_to": {"m.in_reply_to": {"event_id": theirs["event_id"]}}})
            await say({"msgtype": "m.text", "body": "That is all for now."})
    run(staff_work())

    g.wait_for(lambda e: e.get("body") == "That is all for now.", what="staff's last message")
    text = json.dumps(g.seen)
    for secret in ("worried", "Dan", "probation", "!threshold"):
        assert secret not in text, g.seen
    no_user_ids(g.seen)
    assert "@" not in text, g.seen
    hellos = [e for e in g.seen if e["kind"] == "message" and "Ana" in (e.get("body") or "")]
    # once; with its new words already if the page read it after the edit
    assert len(hellos) == 1, g.seen
    assert hellos[0]["body"] in ("Hello, I am Ana from the helpline", "Hello, I am Ana from the test helpline")
    edit = g.wait_for(lambda e: e["kind"] == "edited", what="the edit")
    assert edit["entry"] == hellos[0]["id"] and edit["body"] == "Hello, I am Ana from the test helpline"
    assert not any((e.get("body") or "").startswith("* ") for e in g.seen), g.seen
    replies = [e for e in g.seen if e.get("body") == "Of course, tell me more."]
    assert len(replies) == 1 and replies[0]["from"]["role"] == "staff", g.seen
    assert mine["from"]["role"] == "self"

    # A page opened now shows the message once, edited, with its new words.
    again = Guest(env.gw_url)
    again.session = g.session
    again.poll(timeout_ms=0)
    shown = {e["id"]: e for e in again.seen}
    first = shown[hellos[0]["id"]]
    assert first["body"] == "Hello, I am Ana from the test helpline" and first.get("edited") is True
    assert "worried" not in json.dumps(again.seen) and "@" not in json.dumps(again.seen)
