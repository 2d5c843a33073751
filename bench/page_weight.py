#!/usr/bin/env python3
"""The guest page's weight: the first load against its 25 KB budget, and with
--service, what an open chat costs afterwards, headers included.

    bench/page_weight.py                 # from bridge/web, compressed as embedded
    bench/page_weight.py --url URL       # what a running gateway sends (URL: its root)
    bench/page_weight.py --url URL --service NAME
                                         # and a chat started from NAME's public entry:
                                         # bytes per idle minute, per message each way
    bench/page_weight.py --check         # exit 1 when over a budget

A first load fetches index.html, app.css, app.js and icon.svg, then the
strings: the language the browser prefers and, if the guest picks another,
that one too. The table counts the worst case, English plus the largest
other language file. Compressed means gzip -9 as bridge/gen_web_assets.py
embeds it (or, with --url, the bytes the gateway sent with Accept-Encoding:
gzip, response headers included). API answers (GET /page and the notice)
are listed with --url but depend on the configuration.

The chat's figures are bytes on the wire at the HTTP level over HTTP/1.1
(request line, headers and body each way; TCP/IP and TLS framing not
counted). Requests carry the headers Chromium on a phone sends with the
page's fetch() (REQUEST_HEADERS below: the page adds only Authorization and,
on a POST, Content-Type); answers are the gateway's own, read off the socket.

- idle minute: the long polls of one minute with nothing new (the page's
  POLL_MS), each a request and its empty answer;
- guest -> staff: POST /send and its answer (the page marks the message
  sent on it), and the bytes its echo adds to the next poll answer, which
  comes anyway (an own echo does not wake a waiting poll);
- staff -> guest: a poll answer bringing one message (measured with the
  guest's own echo, the same shape), and the poll that follows it.

A message's body is 60 characters. Over HTTP/2 (a proxy in front) the
repeated request headers shrink to a few bytes each (HPACK).
"""

import argparse
import gzip
import http.client
import json
import os
import re
import secrets
import sys
import time
import urllib.parse
import urllib.request

BUDGET = 25 * 1024
IDLE_BUDGET = 1024     # bytes per idle minute
MESSAGE_BUDGET = 1024  # bytes per message, each way
API = "/_threshold/gateway/v1/"
# What Chromium on an Android phone sends with the page's fetch() besides
# Host, Connection and the page's own Authorization / Content-Type (Chrome
# 131; the page asks for no cache headers: the answers say no-store).
REQUEST_HEADERS = [
    ("sec-ch-ua-platform", '"Android"'),
    ("User-Agent", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/131.0.0.0 Mobile Safari/537.36"),
    ("sec-ch-ua", '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"'),
    ("sec-ch-ua-mobile", "?1"),
    ("Accept", "*/*"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "cors"),
    ("Sec-Fetch-Dest", "empty"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-GB,en;q=0.9"),
]


def poll_ms():
    """The page's long poll, read from app.js (POLL_MS)."""
    m = re.search(r"var POLL_MS = (\d+);", open(os.path.join(WEB, "app.js")).read())
    return int(m.group(1))


class Wire:
    """One HTTP/1.1 connection to the gateway, counting bytes each way."""

    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host = u.netloc
        self.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=90)
        self.token = None

    def call(self, method, path, body=None):
        """(status, json, bytes sent, bytes received)."""
        head = [("Host", self.host), ("Connection", "keep-alive")] + REQUEST_HEADERS
        data = None
        if self.token:
            head.insert(3, ("Authorization", "Bearer " + self.token))
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            head += [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                     ("Origin", "http://" + self.host)]
        self.conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in head:
            self.conn.putheader(k, v)
        self.conn.endheaders(data)
        sent = len("%s %s HTTP/1.1\r\n" % (method, path)) + sum(len(k) + len(v) + 4 for k, v in head) \
            + 2 + (len(data) if data else 0)
        r = self.conn.getresponse()
        raw = r.read()
        got = len("HTTP/1.1 %d %s\r\n" % (r.status, r.reason)) \
            + sum(len(k) + len(v) + 4 for k, v in r.getheaders()) + 2 + len(raw)
        return r.status, json.loads(raw or b"null"), sent, got


def chat_costs(base, service):
    """Bytes per idle minute and per message each way, from a chat started
    at `service`'s public entry."""
    w = Wire(base)
    st, inv, _, _ = w.call("POST", API + "invitation", {"service": service})
    assert st == 200, inv
    st, r, _, _ = w.call("POST", API + "redeem", {"service": service, "consent": {
        "version": inv["notice"]["version"], "language": "en", "agreed": True}})
    assert st == 200, r
    w.token = r["session"]
    since = 0
    for _ in range(50):  # until the conversation is open and the greeting read
        st, f, _, _ = w.call("GET", API + "feed?since=%d&timeout_ms=0" % since)
        since = max(since, f.get("next", since))
        if f.get("state") == "open":
            break
        time.sleep(0.2)
    # An empty poll answers the same bytes whether it waited 0 s or POLL_MS.
    st, f, up, down = w.call("GET", API + "feed?since=%d&timeout_ms=0" % since)
    per_min = 60000.0 / poll_ms()
    idle = (up + down) * per_min
    body = "x" * 60
    lid = secrets.token_hex(6)
    for _ in range(100):
        st, _, s_up, s_down = w.call("POST", API + "send", {"local_id": lid, "body": body})
        if st != 409:
            break
        time.sleep(0.2)
    assert st in (200, 202), st
    # The page marks its message sent on the gateway's answer; the echo does
    # not wake a waiting poll (it is not news to the guest) and rides with
    # the next answer, so what the message adds is the send and the echo's
    # bytes in an answer that comes anyway.
    for _ in range(100):
        st, f, p_up, p_down = w.call("GET", API + "feed?since=%d&timeout_ms=0" % since)
        if any(e.get("local_id") == lid for e in f.get("events", [])):
            break
        since = max(since, f.get("next", since))
        time.sleep(0.1)
    since = f.get("next", since)
    st, _, n_up, _ = w.call("GET", API + "feed?since=%d&timeout_ms=0" % since)
    out = s_up + s_down + (p_down - down)
    # A message from staff wakes the waiting poll: its answer, and the next poll.
    inbound = p_down + n_up
    return [("idle minute (%.2f polls)" % per_min, idle, IDLE_BUDGET),
            ("a message, guest -> staff", out, MESSAGE_BUDGET),
            ("a message, staff -> guest", inbound, MESSAGE_BUDGET),
            ("  (one poll: request / answer)", "%d / %d" % (up, down), None)]
HERE = os.path.dirname(os.path.abspath(__file__))
WEB = os.path.join(HERE, "..", "bridge", "web")


def first_load(web):
    langs = sorted(f for f in os.listdir(os.path.join(web, "i18n")) if f.endswith(".json"))
    others = [f for f in langs if f != "en.json"]
    biggest = max(others, key=lambda f: len(gzip.compress(
        open(os.path.join(web, "i18n", f), "rb").read(), 9, mtime=0))) if others else None
    files = ["index.html", "app.css", "app.js", "icon.svg", "i18n/en.json"]
    if biggest:
        files.append("i18n/" + biggest)
    return files


def from_source(files):
    """Each file as the binary embeds it (bridge/gen_web_assets.py)."""
    sys.path.insert(0, os.path.join(HERE, "..", "bridge"))
    import gen_web_assets
    rows = []
    for f in files:
        data = open(os.path.join(WEB, f), "rb").read()
        if os.path.splitext(f)[1] in gen_web_assets.STRIP:
            data = gen_web_assets.strip_comments(data.decode("utf-8")).encode("utf-8")
        rows.append((f, len(data), len(gzip.compress(data, compresslevel=9, mtime=0))))
    return rows


def from_url(base, files):
    rows = []
    for f in files + ["_threshold/gateway/v1/page"]:
        req = urllib.request.Request(base.rstrip("/") + "/" + f, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            head = sum(len(k) + len(v) + 4 for k, v in r.getheaders()) + len("HTTP/1.1 200 OK\r\n\r\n")
            identity = len(gzip.decompress(body)) if r.headers.get("Content-Encoding") == "gzip" \
                else len(body)
        rows.append((f, identity, len(body) + head))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="measure a running gateway at this root URL")
    ap.add_argument("--check", action="store_true", help="exit 1 when over the budget")
    ap.add_argument("--service", help="with --url: start a chat at this service's public entry "
                                      "and measure what it costs afterwards")
    ap.add_argument("--check-chat", default="idle",
                    help="with --check: the chat budgets enforced, comma-separated: idle, out, in "
                         "(default idle)")
    args = ap.parse_args()
    files = first_load(WEB)
    rows = from_url(args.url, files) if args.url else from_source(files)
    col = "sent (gzip + headers)" if args.url else "gzip -9"
    print("%-32s %10s %22s" % ("first load", "bytes", col))
    for name, ident, comp in rows:
        print("%-32s %10d %22d" % (name, ident, comp))
    total = sum(r[2] for r in rows)
    print("%-32s %10d %22d" % ("total", sum(r[1] for r in rows), total))
    print("%-32s %10s %22d  (%.0f%% used, %d bytes to spare)"
          % ("budget", "", BUDGET, 100.0 * total / BUDGET, BUDGET - total))
    over = args.check and total > BUDGET
    if args.url and args.service:
        print()
        print("%-32s %10s %22s" % ("an open chat (HTTP/1.1)", "budget", "bytes, headers included"))
        enforce = {"idle": 0, "out": 1, "in": 2}
        wanted = {enforce[k] for k in args.check_chat.split(",") if k in enforce}
        for i, (name, n, budget) in enumerate(chat_costs(args.url, args.service)):
            if budget is None:
                print("%-32s %10s %22s" % (name, "", n))
                continue
            flag = "" if n <= budget else "  over"
            print("%-32s %10d %22d%s" % (name, budget, n, flag))
            if args.check and n > budget and i in wanted:
                over = True
    if over:
        print("page_weight: over the budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
