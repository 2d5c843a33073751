"""A small client of the guest gateway (docs/gateway-api.md), as the guest
page uses it, for the integration tests."""

import json
import os
import re
import secrets
import time
import urllib.parse

import jsonschema
import requests

API = "/_threshold/gateway/v1"

_SCHEMA_PATH = os.path.join(os.environ.get("THRESHOLD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                            "schemas", "gateway-api.schema.json")
with open(_SCHEMA_PATH) as _f:
    SCHEMA = json.load(_f)
jsonschema.Draft202012Validator.check_schema(SCHEMA)
validated = []  # (method, path, status) of every answer checked, for the tests' own check


def endpoint_of(method, path):
    """The schema's "METHOD PATH" for a request, a {name} in it matching one
    path segment; None if it names no endpoint."""
    key = "%s %s" % (method, path)
    if key in SCHEMA["endpoints"]:
        return key
    for k in SCHEMA["endpoints"]:
        m, p = k.split(" ", 1)
        if m == method and "{" in p and re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)), path):
            return k
    return None


def check_media(r):
    """A picture or file (the "media" body): never JSON, never a document."""
    ctype = r.headers.get("Content-Type", "")
    assert ctype in ("image/png", "image/jpeg", "image/gif", "image/webp", "application/octet-stream"), ctype
    if ctype == "application/octet-stream":
        assert re.fullmatch(r'attachment; filename="[A-Za-z0-9 ._+()-]+"',
                            r.headers.get("Content-Disposition", "")), r.headers
    csp = r.headers.get("Content-Security-Policy", "")
    assert "sandbox" in csp and "default-src 'none'" in csp, csp
    assert r.headers.get("X-Content-Type-Options") == "nosniff", r.headers
    assert r.headers.get("Cache-Control") == "no-store", r.headers


def check_response(r, *args, **kwargs):
    """Every gateway API answer must match schemas/gateway-api.schema.json."""
    path = urllib.parse.urlsplit(r.request.url).path
    if not path.startswith(API):
        return r
    key = endpoint_of(r.request.method, path)
    ep = SCHEMA["endpoints"].get(key) if key else None
    if ep is None or r.status_code in (404, 405) and str(r.status_code) not in ep["responses"]:
        body_schema = "error"
    else:
        body_schema = ep["responses"].get(str(r.status_code))
        assert body_schema, "%s answered %d, which the schema does not list" % (key, r.status_code)
    if body_schema == "media":
        check_media(r)
    elif body_schema == "sent":
        # no body and nothing about one (docs/gateway-api.md, "Headers")
        assert r.content == b"" and r.headers.get("Content-Length") == "0", (r.headers, r.content)
        assert "Content-Type" not in r.headers, r.headers
    else:
        assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
        doc = dict(SCHEMA["$defs"][body_schema])
        doc["$defs"] = SCHEMA["$defs"]
        jsonschema.validate(r.json(), doc, cls=jsonschema.Draft202012Validator)
    validated.append((r.request.method, key.split(" ", 1)[1] if key else path, r.status_code))
    return r


api = requests.Session()
api.hooks["response"].append(check_response)


class Guest:
    """One person's browser: a session token and the feed position."""

    def __init__(self, base):
        self.base = base
        self.session = None
        self.since = 0
        self.seen = []
        self.pseudonym = None
        self.resume_code = None

    def post(self, path, body, auth=True, **kw):
        headers = {"Authorization": "Bearer " + self.session} if auth and self.session else {}
        return api.post(self.base + API + path, json=body, headers=headers, timeout=30, **kw)

    def get(self, path, auth=True, **kw):
        headers = {"Authorization": "Bearer " + self.session} if auth and self.session else {}
        return api.get(self.base + API + path, headers=headers, timeout=90, **kw)

    def redeem(self, invite=None, service=None, version="1", language="en"):
        entry = {"invite": invite} if invite else {"service": service}
        r = self.post("/invitation", entry, auth=False)
        assert r.status_code == 200, r.text
        notice = r.json()["notice"]
        body = dict(entry, consent={"version": notice["version"], "language": language, "agreed": True})
        r = self.post("/redeem", body, auth=False)
        assert r.status_code == 200, r.text
        j = r.json()
        self.session, self.pseudonym = j["session"], j["pseudonym"]
        self.resume_code = j.get("resume_code")
        return j

    def send(self, text, local_id=None, timeout=30):
        """Send, retrying while the room is being set up; the local id."""
        local_id = local_id or secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        while True:
            r = self.post("/send", {"local_id": local_id, "body": text})
            if r.status_code != 409 or time.monotonic() > deadline:
                break
            time.sleep(r.json().get("retry_after_ms", 500) / 1000)
        assert r.status_code == 202, r.text
        return local_id

    def poll(self, timeout_ms=5000):
        r = self.get("/feed", params={"since": self.since, "timeout_ms": timeout_ms})
        assert r.status_code == 200, r.text
        j = r.json()
        self.seen.extend(j["events"])
        self.since = j["next"]
        return j

    def wait_for(self, pred, timeout=30, what="a feed entry"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.seen:
                if pred(e):
                    return e
            self.poll(timeout_ms=2000)
        raise AssertionError("%s never reached the guest's feed; saw %s"
                             % (what, json.dumps(self.seen, indent=1)))


def wait_gateway(env, timeout=30):
    """Until the daemon's gateway answers GET /page (after a (re)start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(env.gw_url + API + "/page", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError("the gateway did not start")


def join_portal(env, staff_room, pseudonym, timeout=30, expect_service=None):
    """Staff read the bot's "X is waiting" notice in the service's staff room
    and join the conversation room it links to; that room's id."""
    from helpers import bearer, q  # matrix-nio is needed only here
    from mx import Client, poll, run

    async def find():
        async with Client.for_user(env, "staff") as s:
            async def notice():
                for ev in reversed(await s.history(staff_room)):
                    body = ev.get("content", {}).get("body", "")
                    if ev.get("sender") == env.bot and body.startswith(pseudonym + " is waiting"):
                        return body
                return None
            return await poll(notice, timeout=timeout, what="the staff room notice")
    body = run(find())
    if expect_service:
        assert expect_service in body, body
    room = body.rsplit("/#/", 1)[1].strip()
    r = requests.post("%s/_matrix/client/v3/join/%s" % (env.hs_url, q(room)),
                      headers=bearer(env.token("staff")), json={}, timeout=30)
    assert r.status_code == 200, r.text
    return room


def invite_link_token(link):
    m = re.search(r"#invite=([A-Za-z0-9_-]{32})$", link)
    assert m, link
    return m.group(1)
