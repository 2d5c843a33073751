"""A scripted fake homeserver for tests that run Threshold without Synapse
(tests/integration/standalone.py): its homeserver.url points here.

It answers the Client-Server requests Threshold's outbox makes (register,
createRoom, invite, join, send, state, ...) with small plausible answers, and
keeps every request it saw.  A test can make it fail on purpose:

    hs = FakeHomeserver().start()
    hs.fail("500", match="/send/")         # 500 for every send
    hs.fail("429", retry_after_ms=300)     # 429 M_LIMIT_EXCEEDED for everything
    hs.fail("garbage")                     # 502 with an HTML page (a proxy in between)
    hs.fail("hang")                        # read the request, answer nothing until heal()
    hs.heal()                              # answer normally again

A send (PUT .../send/{type}/{txnId}) is remembered by (user, path) the way a
homeserver dedupes on the access token and txnId: the same path again gets
the same event id and is not counted as a second message.  `delivered()`
lists each message once, in the order first accepted.

Only the standard library.
"""

import http.server
import itertools
import json
import re
import socketserver
import threading
import time
import urllib.parse

SEND_RE = re.compile(r"^/_matrix/client/v3/rooms/([^/]+)/send/([^/]+)/([^/]+)$")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that went away (Threshold killed mid-request) is expected


class FakeHomeserver:
    def __init__(self, server_name="localhost"):
        self.server_name = server_name
        self.lock = threading.Lock()
        self.requests = []        # (monotonic time, method, path, user_id, status)
        self.sends = {}           # (user_id, path) -> {"event_id", "content", "room", "txn", "attempts"}
        self.order = []           # keys of self.sends, first accepted first
        self._mode = None
        self._match = None
        self._retry_after_ms = 0
        self._healed = threading.Event()
        self._healed.set()
        self._ids = itertools.count(1)
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

    def fail(self, mode, match=None, retry_after_ms=0):
        """From now on answer requests whose path contains @match (all when
        None) with fault @mode: "500", "429", "garbage" or "hang"."""
        with self.lock:
            self._mode, self._match, self._retry_after_ms = mode, match, retry_after_ms
            if mode == "hang":
                self._healed.clear()

    def heal(self):
        with self.lock:
            self._mode = None
            self._healed.set()

    # -- what it saw ------------------------------------------------------

    def attempts(self, match):
        """(time, status) of each request whose path contains @match."""
        with self.lock:
            return [(t, s) for (t, _, p, _, s) in self.requests if match in p]

    def delivered(self, user_id=None):
        """Each accepted message once: dicts with room, txn, content, attempts."""
        with self.lock:
            return [dict(self.sends[k], user_id=k[0], path=k[1]) for k in self.order
                    if user_id is None or k[0] == user_id]

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
        user = urllib.parse.parse_qs(url.query).get("user_id", [None])[0]
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            mode = self._mode if (self._match is None or self._match in path) else None
            retry = self._retry_after_ms
        if mode == "hang":
            with self.lock:
                self.requests.append((time.monotonic(), h.command, path, user, 0))
            self._healed.wait(30)
            h.close_connection = True
            return
        if mode in ("500", "429", "garbage"):
            status = {"500": 500, "429": 429, "garbage": 502}[mode]
            with self.lock:
                self.requests.append((time.monotonic(), h.command, path, user, status))
            if mode == "500":
                self._reply(h, 500, {"errcode": "M_UNKNOWN", "error": "Internal server error"})
            elif mode == "429":
                self._reply(h, 429, {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests",
                                     "retry_after_ms": retry})
            else:
                self._reply(h, 502, b"<html><body><h1>502 Bad Gateway</h1>\x00\xff{{{</body></html>",
                            ctype="text/html")
            return
        status, answer = self._ok(h.command, path, user, body)
        with self.lock:
            self.requests.append((time.monotonic(), h.command, path, user, status))
        self._reply(h, status, answer)

    def _ok(self, method, path, user, body):
        unq = urllib.parse.unquote
        if path.endswith("/ping") and "/appservice/" in path:
            return 200, {"duration_ms": 1}
        if path == "/_matrix/client/v3/createRoom":
            return 200, {"room_id": "!fake%d:%s" % (next(self._ids), self.server_name)}
        if path == "/_matrix/client/v3/register":
            lp = (body or {}).get("username", "x")
            return 200, {"user_id": "@%s:%s" % (lp, self.server_name)}
        if path.endswith("/joined_members"):
            return 200, {"joined": {}}
        m = SEND_RE.match(path)
        if m and method == "PUT":
            key = (user, path)
            with self.lock:
                s = self.sends.get(key)
                if s is None:
                    s = self.sends[key] = {"event_id": "$fake%d" % next(self._ids),
                                           "room": unq(m.group(1)), "txn": unq(m.group(3)),
                                           "content": body or {}, "attempts": 0}
                    self.order.append(key)
                s["attempts"] += 1
                return 200, {"event_id": s["event_id"]}
        return 200, {}
