"""A scripted fake homeserver for tests that run Threshold without Synapse
(tests/integration/standalone.py): its homeserver.url points here.

It answers the Client-Server requests Threshold's outbox makes (register,
createRoom with a fresh room id each time, invite, join, send, state, redact,
...) with small plausible answers, and keeps every request it saw: `seen(pred)`
and `wait(pred)` look through them, `rooms()`, `room_of(guest)` and `sends()`
answer the usual questions.  A test can make it fail on purpose:

    hs = FakeHomeserver().start()
    hs.fail("500", match="/send/")         # 500 for every send
    hs.fail("429", retry_after_ms=300)     # 429 M_LIMIT_EXCEEDED for everything
    hs.fail("garbage")                     # 502 with an HTML page (a proxy in between)
    hs.fail("hang")                        # read the request, answer nothing until heal()
    hs.heal()                              # answer normally again

It also keeps media: `add_media(data)` stores bytes and returns their mxc
URI, served at GET /_matrix/client/v1/media/download/{server}/{id} (404
M_NOT_FOUND for any other id); `media_auth` lists the Authorization header
of each download asked for.

A send (PUT .../send/{type}/{txnId}) is remembered by (user, path) the way a
homeserver dedupes on the access token and txnId: the same path again gets
the same event id and is not counted as a second message.  `delivered()`
lists each message once, in the order first accepted.

Only the standard library.
"""

import http.server
import itertools
import collections
import json
import re
import socketserver
import threading
import time
import urllib.parse

SEND_RE = re.compile(r"^/_matrix/client/v3/rooms/([^/]+)/send/([^/]+)/([^/]+)$")
MEDIA_PREFIX = "/_matrix/client/v1/media/download/"
EVENT_RE = re.compile(r"^/_matrix/client/v3/rooms/[^/]+/(state|redact)/")

# One request as seen: method, path (percent-decoded), query (dict), body (the
# JSON or None) first, so r[0]..r[3] read the same as r.method..r.body; then
# when it came (time.monotonic()), the path as sent and the status answered
# (0 for a request left hanging).
Request = collections.namedtuple("Request", "method path query body time raw_path status")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that went away (Threshold killed mid-request) is expected


class FakeHomeserver:
    def __init__(self, server_name="localhost"):
        self.server_name = server_name
        self.lock = threading.Lock()
        self.log = []             # a Request for each request, in order
        self._sent = {}           # (user_id, path) -> {"event_id", "content", "room", "type", "txn", "attempts"}
        self.order = []           # keys of self._sent, first accepted first
        self._rooms = []          # room ids createRoom answered, in order
        self._mode = None
        self._match = None
        self._retry_after_ms = 0
        self._hold_s = 30
        self._healed = threading.Event()
        self._healed.set()
        self._ids = itertools.count(1)
        self._media = {}          # "server/id" -> bytes
        self.media_auth = []      # the Authorization header of each download
        self.httpd = None

    # -- control ----------------------------------------------------------

    def start(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per answer, sent at once (no 40 ms Nagle/delayed-ACK stall).
            wbufsize = 65536
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _answer(self):
                fake._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._healed.set()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def fail(self, mode, match=None, retry_after_ms=0, hold_s=30):
        """From now on answer requests whose path contains @match (all when
        None) with fault @mode: "500", "429", "garbage" or "hang" (each
        request held until heal() or for @hold_s seconds, then the connection
        closed unanswered)."""
        with self.lock:
            self._mode, self._match, self._retry_after_ms = mode, match, retry_after_ms
            self._hold_s = hold_s
            if mode == "hang":
                self._healed.clear()

    def add_media(self, data):
        """Store @data; its mxc URI."""
        with self.lock:
            key = "%s/Media%d" % (self.server_name, next(self._ids))
            self._media[key] = bytes(data)
        return "mxc://" + key

    def media(self):
        """The bytes of each upload and add_media, by mxc URI."""
        with self.lock:
            return {"mxc://" + k: v for k, v in self._media.items()}

    def heal(self):
        with self.lock:
            self._mode = None
            self._healed.set()

    # -- what it saw ------------------------------------------------------

    @property
    def requests(self):
        """(time, method, path as sent, user_id, status) of each request."""
        with self.lock:
            return [(r.time, r.method, r.raw_path, r.query.get("user_id"), r.status)
                    for r in self.log]

    def seen(self, pred=lambda r: True):
        """The Requests @pred is true of, in order."""
        with self.lock:
            log = list(self.log)
        return [r for r in log if pred(r)]

    def wait(self, pred, timeout=15, what="a request"):
        """seen(@pred) once it is not empty; AssertionError after @timeout s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.seen(pred)
            if got:
                return got
            time.sleep(0.02)
        raise AssertionError("the homeserver never saw %s" % what)

    def attempts(self, match):
        """(time, status) of each request whose path contains @match."""
        with self.lock:
            return [(r.time, r.status) for r in self.log if match in r.raw_path]

    def delivered(self, user_id=None):
        """Each accepted message once: dicts with room, type, txn, content, attempts."""
        with self.lock:
            return [dict(self._sent[k], user_id=k[0], path=k[1]) for k in self.order
                    if user_id is None or k[0] == user_id]

    def sends(self):
        """(room, user_id, content) of each m.room.message accepted, once, in order."""
        return [(m["room"], m["user_id"], m["content"]) for m in self.delivered()
                if m["type"] == "m.room.message"]

    def rooms(self):
        """The room ids createRoom answered, oldest first."""
        with self.lock:
            return list(self._rooms)

    def room_of(self, guest):
        """The room @guest was joined to (the join Threshold asked for), or None."""
        for r in self.seen(lambda r: r.method == "POST" and r.path.endswith("/join")
                           and r.query.get("user_id") == guest):
            return r.path.split("/")[5]
        return None

    def by_local_id(self):
        """local id -> number of distinct messages (Matrix txn ids) carrying it."""
        counts = {}
        for m in self.delivered():
            lid = m["content"].get("org.threshold.local_id")
            if lid:
                counts[lid] = counts.get(lid, 0) + 1
        return counts

    # -- serving ----------------------------------------------------------

    def _reply(self, h, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    def _handle(self, h):
        url = urllib.parse.urlsplit(h.path)
        path = url.path
        query = dict(urllib.parse.parse_qsl(url.query))
        user = query.get("user_id")
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None

        def record(status):
            with self.lock:
                self.log.append(Request(h.command, urllib.parse.unquote(path), query, body,
                                        time.monotonic(), path, status))

        with self.lock:
            mode = self._mode if (self._match is None or self._match in path) else None
            retry = self._retry_after_ms
            hold = self._hold_s
        if mode == "hang":
            record(0)
            self._healed.wait(hold)
            h.close_connection = True
            return
        if mode in ("500", "429", "garbage"):
            status = {"500": 500, "429": 429, "garbage": 502}[mode]
            record(status)
            if mode == "500":
                self._reply(h, 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
            elif mode == "429":
                self._reply(h, 429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests",
                                     "retry_after_ms": retry})
            else:
                self._reply(h, 502, b"<html><body><h1>502 Bad Gateway</h1>\x00\xff{{{</body></html>",
                            ctype="text/html")
            return
        if path.startswith(MEDIA_PREFIX) and h.command == "GET":
            with self.lock:
                data = self._media.get(path[len(MEDIA_PREFIX):])
                self.media_auth.append(h.headers.get("Authorization"))
            record(200 if data is not None else 404)
            if data is None:
                self._reply(h, 404, {"errcode": "M_NOT_FOUND", "error": "Not found"})
            else:
                self._reply(h, 200, data, ctype="application/octet-stream")
            return
        if path == "/_matrix/media/v3/upload" and h.command == "POST":
            # spec: CS API, POST /_matrix/media/v3/upload -> {"content_uri"}
            record(200)
            self._reply(h, 200, {"content_uri": self.add_media(raw)})
            return
        status, answer = self._ok(h.command, path, user, body)
        record(status)
        self._reply(h, status, answer)

    def _ok(self, method, path, user, body):
        unq = urllib.parse.unquote
        if path.endswith("/ping") and "/appservice/" in path:
            return 200, {"duration_ms": 1}
        if path == "/_matrix/client/v3/createRoom":
            with self.lock:
                room = "!fake%d:%s" % (next(self._ids), self.server_name)
                self._rooms.append(room)
            return 200, {"room_id": room}
        if path == "/_matrix/client/v3/register":
            lp = (body or {}).get("username", "x")
            return 200, {"user_id": "@%s:%s" % (lp, self.server_name)}
        if path.endswith("/joined_members"):
            return 200, {"joined": {}}
        m = SEND_RE.match(path)
        if m and method == "PUT":
            key = (user, path)
            with self.lock:
                s = self._sent.get(key)
                if s is None:
                    s = self._sent[key] = {"event_id": "$fake%d" % next(self._ids),
                                           "room": unq(m.group(1)), "type": unq(m.group(2)),
                                           "txn": unq(m.group(3)), "content": body or {},
                                           "attempts": 0}
                    self.order.append(key)
                s["attempts"] += 1
                return 200, {"event_id": s["event_id"]}
        if EVENT_RE.match(path) and method in ("PUT", "POST"):
            return 200, {"event_id": "$fake%d" % next(self._ids)}
        return 200, {}
