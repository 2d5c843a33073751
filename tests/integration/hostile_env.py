"""Helpers for test_hostile.py: a scripted homeserver that answers every
Client-Server request Threshold makes (so gateway conversations open without
Synapse), a Threshold daemon with the gateway on, and raw HTTP over sockets
for requests a well-behaved client library will not send."""

import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import yaml

from standalone import SERVER_NAME, Standalone, free_port

SERVICE = "helpline"
STAFF = "@staff:" + SERVER_NAME


class FakeHomeserver:
    """Answers createRoom with a fresh room id, a send with an event id and
    everything else with {}; remembers every request it was sent."""

    def __init__(self):
        self.requests = []  # (method, path, query dict, body json or None)
        self.lock = threading.Lock()
        self.rooms = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                u = urllib.parse.urlsplit(self.path)
                path = urllib.parse.unquote(u.path)
                query = dict(urllib.parse.parse_qsl(u.query))
                with outer.lock:
                    outer.requests.append((self.command, path, query, body))
                    if path.endswith("/createRoom"):
                        outer.rooms += 1
                        out = {"room_id": "!conv%d:%s" % (outer.rooms, SERVER_NAME)}
                    elif "/send/" in path or "/state/" in path or "/redact/" in path:
                        out = {"event_id": "$ev%d" % len(outer.requests)}
                    elif path.endswith("/joined_members"):
                        out = {"joined": {}}
                    else:
                        out = {}
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def seen(self, pred=lambda r: True):
        with self.lock:
            return [r for r in self.requests if pred(r)]

    def sends(self):
        """(room, user_id, content) of every message sent, in order."""
        return [(p.split("/")[5], q.get("user_id"), b) for m, p, q, b in self.seen()
                if m == "PUT" and "/send/m.room.message/" in p]

    def room_of(self, guest):
        """The room a guest was joined to (the join Threshold asked for)."""
        for m, p, q, b in self.seen():
            if m == "POST" and p.endswith("/join") and q.get("user_id") == guest:
                return p.split("/")[5]
        return None

    def wait(self, pred, timeout=15, what="a request"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.seen(pred)
            if got:
                return got
            time.sleep(0.02)
        raise AssertionError("the homeserver never saw %s" % what)


def gateway_daemon(binary, workdir, hs_url=None, **gateway):
    """A Standalone daemon with the gateway and one public service; @gateway
    overrides gateway.* keys.  Not started."""
    gw_port = free_port()
    gw = {"listen_address": "127.0.0.1", "listen_port": gw_port,
          "public_url": "http://127.0.0.1:%d" % gw_port}
    gw.update(gateway)
    extra = {
        "gateway": gw,
        "services": {SERVICE: {"display_name": "Test Helpline",
                               "staff_room": "!staff:" + SERVER_NAME,
                               "public_entry": True, "public_per_hour": 100000}},
        "roles": {"staff": [STAFF]},
    }
    d = Standalone(binary, workdir, extra=extra)
    d.setup()
    if hs_url:
        with open(d.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["homeserver"]["url"] = hs_url
        with open(d.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    d.gw_port = gw_port
    d.gw_url = gw["public_url"]
    return d


# ---- raw HTTP -------------------------------------------------------------

def raw(port, data, timeout=5, shut=False):
    """Send @data as is; (status, [(name, value)], body bytes, raw head).
    Reads one response (Content-Length, or to the close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines or not lines[0].startswith(b"HTTP/1."):
            return None, [], b"", head
        status = int(lines[0].split()[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
        hd = dict(headers)
        if data.startswith(b"HEAD ") or status in (204, 304):
            return status, headers, body, head
        if "content-length" in hd:
            n = int(hd["content-length"])
            while len(body) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        else:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, headers, body, head
    finally:
        s.close()


def request_bytes(method, path, headers=(), body=b"", host=b"127.0.0.1"):
    """An HTTP/1.1 request as bytes; @path and header values are bytes or str."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    out = b(method) + b" " + b(path) + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
    for name, value in headers:
        out += b(name) + b": " + b(value) + b"\r\n"
    if body or method in ("POST", "PUT"):
        out += b"Content-Length: %d\r\n" % len(body)
    return out + b"\r\n" + body


def pid_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def start_limited(d, nofile):
    """Start @d with RLIMIT_NOFILE at @nofile (soft and hard)."""
    return d.start(prefix=("prlimit", "--nofile=%d:%d" % (nofile, nofile), "--"))

