#!/usr/bin/env python3
"""The guest page's first-load weight against its 30 KB budget.

    bench/page_weight.py                 # from bridge/web, compressed as embedded
    bench/page_weight.py --url URL       # what a running gateway sends (URL: its root)
    bench/page_weight.py --check         # exit 1 when over the budget

A first load fetches index.html, app.css, app.js and icon.svg, then the
strings: the language the browser prefers and, if the guest picks another,
that one too. The table counts the worst case, English plus the largest
other language file. Compressed means gzip -9 as bridge/gen_web_assets.py
embeds it (or, with --url, the bytes the gateway sent with Accept-Encoding:
gzip, response headers included). API answers (GET /page and the notice)
are listed with --url but depend on the configuration.
"""

import argparse
import gzip
import os
import sys
import urllib.request

BUDGET = 30 * 1024
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
    rows = []
    for f in files:
        data = open(os.path.join(WEB, f), "rb").read()
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
    if args.check and total > BUDGET:
        print("page_weight: over the budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
