#!/usr/bin/env python3
"""checksrc.py - mechanical rules for Threshold's C sources (like curl's checksrc).

    scripts/checksrc.py [SOURCE_DIR]

Checks, over appservice/, bridge/, policy/, fuzz/, tests/ and bench/:

1. Banned calls anywhere: strcpy, strcat, sprintf, vsprintf, strtok, atoi, atol,
   atoll, gets (unbounded or without error reporting; use the util.h helpers,
   snprintf, strtol with an end pointer).
2. policy/ is pure: it includes only the headers in POLICY_HEADERS (no I/O,
   no clock, no allocation), calls none of POLICY_BANNED, and has no writable
   file-scope variable (a `static` at the left margin that is not `const` and
   not a function).
3. Layers point one way: policy/ includes only policy/ headers; bridge/ may
   include policy/ and bridge/ headers; appservice/ may include all three.
   The base toolkit (BASE_HEADERS: error codes and allocation wrappers, the
   log, JSON helpers; docs/architecture.md "Layers") sits below bridge/ and
   appservice/: bridge/ may include it, policy/ may not, and it includes
   nothing of the layers.
   A bridge/ include of any other appservice/ header is allowed only while it is
   listed in scripts/layers-debt.txt (what the typed-interface work has not
   yet removed); the list may only shrink: an entry that no longer occurs is
   an error too, so it is deleted when the debt is paid.

Prints one line per finding, "file:line: rule: text", and exits 1 if any.
"""
import os
import re
import sys

BANNED = ("strcpy", "strcat", "sprintf", "vsprintf", "strtok", "atoi", "atol", "atoll", "gets")
POLICY_HEADERS = {"stddef.h", "stdint.h", "stdbool.h", "string.h", "limits.h"}
POLICY_BANNED = ("malloc", "calloc", "realloc", "free", "strdup", "time", "clock_gettime",
                 "gettimeofday", "printf", "fprintf", "puts", "fopen", "open", "read", "write",
                 "getenv", "rand", "random", "abort", "exit")
SOURCE_DIRS = ("appservice", "bridge", "policy", "fuzz", "tests", "bench")
LAYER_OF = {"policy": 0, "bridge": 1, "appservice": 2}
# The base toolkit: headers (still kept in appservice/) every layer above
# policy/ may use; CMake builds their sources as threshold_base.
BASE_HEADERS = {"util.h", "log.h", "jsonx.h"}
BASE_SOURCES = {os.path.join("appservice", n[:-2] + ext) for n in BASE_HEADERS for ext in (".c", ".h")}

CALL = re.compile(r"(?<![A-Za-z0-9_.>])(%s)\s*\(")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def strip_comments_and_strings(text):
    """The text with comments, string and character literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * (j - i - 2) + c if j - i >= 2 else text[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def c_files(root):
    for d in SOURCE_DIRS:
        for base, _, files in os.walk(os.path.join(root, d)):
            if "node_modules" in base:
                continue
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(base, f), root)


def header_layer(root, name):
    """The layer whose folder holds header @name, or None (a system header)."""
    for layer in LAYER_OF:
        if os.path.exists(os.path.join(root, layer, name)):
            return layer
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    debt_path = os.path.join(root, "scripts", "layers-debt.txt")
    debt = set()
    with open(debt_path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                debt.add(line)
    findings = []
    debt_seen = set()
    banned = re.compile(CALL.pattern % "|".join(BANNED))
    policy_banned = re.compile(CALL.pattern % "|".join(POLICY_BANNED))
    for rel in c_files(root):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            raw = f.read()
        code = strip_comments_and_strings(raw)
        layer = rel.split(os.sep, 1)[0]
        raw_lines = raw.split("\n")
        for no, line in enumerate(code.split("\n"), 1):
            for m in banned.finditer(line):
                findings.append("%s:%d: banned-call: %s()" % (rel, no, m.group(1)))
            if layer == "policy":
                for m in policy_banned.finditer(line):
                    findings.append("%s:%d: policy-pure: %s() in policy/" % (rel, no, m.group(1)))
                if (line.startswith("static ") and "const" not in line.split("=")[0]
                        and "(" not in line and line.rstrip().endswith((";", "{", "="))):
                    findings.append("%s:%d: policy-pure: writable file-scope variable" % (rel, no))
            inc = INCLUDE.match(raw_lines[no - 1]) if no - 1 < len(raw_lines) else None
            if not inc:
                continue
            kind, name = inc.groups()
            if layer == "policy":
                if kind == "<" and name not in POLICY_HEADERS:
                    findings.append("%s:%d: policy-pure: #include <%s>" % (rel, no, name))
                if kind == '"' and header_layer(root, name) not in ("policy", None):
                    findings.append("%s:%d: layers: policy/ includes \"%s\"" % (rel, no, name))
            elif rel in BASE_SOURCES and kind == '"' and name not in BASE_HEADERS:
                if header_layer(root, name):
                    findings.append("%s:%d: layers: base includes \"%s\" (base uses no layer)"
                                    % (rel, no, name))
            elif layer in LAYER_OF and kind == '"':
                hl = header_layer(root, name)
                if hl == "appservice" and name in BASE_HEADERS:
                    continue
                if hl and LAYER_OF[hl] > LAYER_OF[layer]:
                    key = "%s -> %s" % (rel, name)
                    if key in debt:
                        debt_seen.add(key)
                    else:
                        findings.append("%s:%d: layers: %s/ includes %s/%s (dependencies point "
                                        "policy <- bridge <- appservice)" % (rel, no, layer, hl, name))
    for key in sorted(debt - debt_seen):
        findings.append("scripts/layers-debt.txt: layers: '%s' no longer occurs: delete the line" % key)
    for f in findings:
        print(f)
    if findings:
        print("checksrc: %d finding(s)" % len(findings), file=sys.stderr)
        return 1
    print("checksrc: OK (%d layer exceptions left in scripts/layers-debt.txt)" % len(debt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
