#!/usr/bin/env python3
"""The guest page's files, checked without a browser.

    check_page.py SOURCE_DIR

- every i18n/<lang>.json has exactly en.json's keys, each a non-empty string
  with the same {placeholders};
- every string index.html and app.js ask for is in en.json;
- index.html has no inline script, no inline style, no event-handler
  attribute, no words of its own, and loads nothing from another site;
- app.js never parses text as HTML (innerHTML and friends, document.write,
  eval, new Function, string timers) and names no other site;
- bridge/gen_web_assets.py gives the same bytes twice, and each gzip body
  inflates to its file.

Prints 'N passed, N failed' and exits non-zero on a failure.
"""

import gzip
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(__file__), "..", ".."))
WEB = os.path.join(SRC, "bridge", "web")
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL: " + what)


def read(*parts):
    with open(os.path.join(WEB, *parts), encoding="utf-8") as f:
        return f.read()


def placeholders(s):
    return sorted(re.findall(r"\{(\w+)\}", s))


# -- strings ------------------------------------------------------------------
langs = sorted(f[:-5] for f in os.listdir(os.path.join(WEB, "i18n")) if f.endswith(".json"))
check({"en", "es", "fr", "ar"} <= set(langs), "languages en, es, fr, ar are present: %s" % langs)
en = json.loads(read("i18n", "en.json"))
for lang in langs:
    d = json.loads(read("i18n", lang + ".json"))
    check(set(d) == set(en), "%s.json has en.json's keys (missing %s, extra %s)"
          % (lang, sorted(set(en) - set(d)), sorted(set(d) - set(en))))
    for k, v in d.items():
        check(isinstance(v, str) and v.strip(), "%s.json: %s is a non-empty string" % (lang, k))
        if k in en and isinstance(v, str):
            check(placeholders(v) == placeholders(en[k]),
                  "%s.json: %s has en's placeholders %s" % (lang, k, placeholders(en[k])))

index = read("index.html")
app = read("app.js") + read("call.js")  # call.js: loaded when a call starts
css = read("app.css")
used = set(re.findall(r'data-t(?:-label)?="([a-z_]+)"', index))
used |= {k for k in re.findall(r"\bt\('([a-z_]+)'", app) if not k.endswith("_")}
# Keys built from a prefix in app.js: each value the code can produce.
families = {
    "status_": ["connecting", "waiting", "open", "reconnecting", "offline", "closed"],
    "state_": ["sending", "sent", "failed", "too_long", "queued"],
    "closed_": ["declined", "left", "erased", "staff", "expired", "erasing"],
}
for prefix, values in families.items():
    check(("'%s' +" % prefix) in app, "app.js builds %s keys" % prefix)
    used |= {prefix + v for v in values}
for k in sorted(used):
    check(k in en, "en.json has %r, which the page uses" % k)
# A key chosen by a condition, t(x ? 'a' : 'b'), appears as a quoted literal.
literals = set(re.findall(r"'([a-z_]+)'", app))
unused = sorted(set(en) - used - literals)
check(not unused, "every en.json string is used (unused: %s)" % unused)


# -- markup -------------------------------------------------------------------
class Scan(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self.ids = []

    def handle_data(self, data):
        # Words in the markup would not be translated: all come from i18n/.
        # The one exception is the neutral <title>, there before any script
        # runs (what the browser's history shows until GET /page answers).
        if data.strip() and self.lasttag not in ("script", "style", "title"):
            self.problems.append("text %r in the markup" % data.strip()[:40])

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "script" and not a.get("src"):
            self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name == "style":
                self.problems.append("style attribute on <%s>" % tag)
            if name.startswith("on"):
                self.problems.append("%s attribute on <%s>" % (name, tag))
            if name in ("src", "href", "action") and value and re.match(r"(?i)\s*(\w+:|//)", value):
                self.problems.append("%s=%r on <%s> leaves the site" % (name, value, tag))


s = Scan()
s.feed(index)
check(not s.problems, "index.html: %s" % s.problems)
check(len(s.ids) == len(set(s.ids)), "index.html ids are unique")
for ref in set(re.findall(r"\$\('([\w-]+)'\)", app)):
    check(ref in s.ids, "app.js's $('%s') is in index.html" % ref)
check(re.search(r'<html lang="en" dir="ltr">', index), "index.html starts with lang and dir")
check(re.search(r'<title>\w[^<]*</title>', index), "index.html has a neutral title of its own")

for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
             "new Function", "createContextualFragment", "DOMParser"):
    check(sink not in app, "app.js does not use %s" % sink)
check(not re.search(r"setTimeout\(\s*['\"]", app), "app.js passes no string to setTimeout")
for name, text in (("app.js", app), ("app.css", css)):
    check(not re.search(r"https?://", text), "%s names no other site" % name)
    check("@import" not in text and "url(" not in text.replace("new URL(", ""),
          "%s loads nothing else" % name)
for prop in ("margin-left", "margin-right", "padding-left", "padding-right", "left:", "right:",
             "text-align: left", "text-align: right", "border-left", "border-right", "float:"):
    check(prop not in css, "app.css uses logical properties, not %s" % prop)

# -- the call code: its own file, loaded only when a call starts (docs/calls.md) --
call_js = read("call.js")
check(len(gzip.compress(call_js.encode(), 9)) <= 10 * 1024, "call.js is at most 10 KB compressed")
check("call.js" not in index, "index.html does not load call.js (app.js imports it when a call starts)")
check(re.search(r"import\('\./call\.js'\)", read("app.js")), "app.js imports call.js lazily")

# -- the embedding ------------------------------------------------------------
gen = os.path.join(SRC, "bridge", "gen_web_assets.py")
sys.path.insert(0, os.path.join(SRC, "bridge"))
import gen_web_assets  # noqa: E402
with tempfile.TemporaryDirectory() as tmp:
    outs = []
    for i in range(2):
        out = os.path.join(tmp, "wa%d.c" % i)
        r = subprocess.run([sys.executable, gen, WEB, out], capture_output=True, text=True)
        check(r.returncode == 0, "gen_web_assets.py runs: %s" % r.stderr)
        outs.append(open(out, "rb").read() if r.returncode == 0 else b"")
    check(outs[0] == outs[1] and outs[0], "gen_web_assets.py is reproducible")
    text = outs[0].decode()
    blocks = re.findall(r"/\* (\S+): (\d+) bytes, (\d+) gzip \*/\n"
                        r"static const unsigned char \w+_data\[\] = \{\n(.*?)\n\};\n"
                        r"static const unsigned char \w+_gzip\[\] = \{\n(.*?)\n\};", text, re.S)
    check(len(blocks) == sum(len(f) for _, _, f in os.walk(WEB)), "every file is embedded")

    def unhex(s):
        return bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", s))

    for path, n, gz_n, data_hex, gz_hex in blocks:
        data, gz = unhex(data_hex), unhex(gz_hex)
        with open(os.path.join(WEB, path.lstrip("/")), "rb") as f:
            want = f.read()
        if os.path.splitext(path)[1] in gen_web_assets.STRIP:
            # without its line-leading comments, and nothing else changed
            want = gen_web_assets.strip_comments(want.decode("utf-8")).encode("utf-8")
            check(len(data) < len(open(os.path.join(WEB, path.lstrip("/")), "rb").read()),
                  "%s: its comments are not sent" % path)
        check(data == want, "%s: embedded bytes are the file" % path)
        if path.endswith(".js") and shutil.which("node"):
            js = os.path.join(tmp, "check.js")
            with open(js, "wb") as f:
                f.write(data)
            r = subprocess.run(["node", "--check", js], capture_output=True, text=True)
            check(r.returncode == 0, "%s: still JavaScript as sent: %s" % (path, r.stderr[-300:]))
        check(len(data) == int(n) and len(gz) == int(gz_n), "%s: the lengths are right" % path)
        check(gzip.decompress(gz) == data, "%s: the gzip body inflates to the file" % path)

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
