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
3. Layers point one way (docs/architecture.md "Layers"), bottom up: policy/,
   base, store, bridge/, appservice/.  A file may include headers of its own
   layer and of those below it, with two exceptions: policy/ includes only
   policy/ headers, and base (BASE_HEADERS: error codes and allocation
   wrappers, the log, JSON helpers) includes nothing of the layers.  Base and
   store (STORE_HEADERS: the LMDB store, the audit log, the config, the parsed
   event, room and guest records) are files still kept in appservice/, each
   built as a CMake library of its own (threshold_base, threshold_store);
   their sources are known here by name.  CMake makes the same rule a build
   error for bridge/ (its include path has no appservice/ in it); this check
   also covers the headers and what CMake cannot see.

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
LAYER_OF = {"policy": 0, "base": 1, "store": 2, "bridge": 3, "appservice": 4}
# The base toolkit: headers (still kept in appservice/) every layer above
# policy/ may use; CMake builds their sources as threshold_base.
BASE_HEADERS = {"util.h", "log.h", "jsonx.h"}
# The records both bridge/ and appservice/ stand on (still kept in
# appservice/); CMake builds their sources as threshold_store.
STORE_HEADERS = {"store.h", "audit.h", "config.h", "mxevent.h", "rooms.h", "guest_record.h", "spool.h", "dedupe.h",
                 "room_counts.h"}
STORE_ONLY_SOURCES = {"migrate.c"}  # sources of the store with no header of their own


def appservice_part(name):
    """The layer of appservice/ file @name (a header or source): base, store or appservice."""
    stem = name[:-2] if name.endswith((".c", ".h")) else name
    if stem + ".h" in BASE_HEADERS:
        return "base"
    if stem + ".h" in STORE_HEADERS or name in STORE_ONLY_SOURCES:
        return "store"
    return "appservice"

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
    """The layer header @name belongs to, or None (a system header)."""
    for folder in ("policy", "bridge", "appservice"):
        if os.path.exists(os.path.join(root, folder, name)):
            return appservice_part(name) if folder == "appservice" else folder
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    findings = []
    banned = re.compile(CALL.pattern % "|".join(BANNED))
    policy_banned = re.compile(CALL.pattern % "|".join(POLICY_BANNED))
    for rel in c_files(root):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            raw = f.read()
        code = strip_comments_and_strings(raw)
        layer = rel.split(os.sep, 1)[0]
        if layer == "appservice":
            layer = appservice_part(os.path.basename(rel))
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
            elif layer == "base" and kind == '"':
                hl = header_layer(root, name)
                if hl and hl != "base":
                    findings.append("%s:%d: layers: base includes \"%s\" (base uses no layer)"
                                    % (rel, no, name))
            elif layer in LAYER_OF and kind == '"':
                hl = header_layer(root, name)
                if hl and LAYER_OF[hl] > LAYER_OF[layer]:
                    findings.append("%s:%d: layers: %s includes %s's \"%s\" (dependencies point "
                                    "policy <- base <- store <- bridge <- appservice)"
                                    % (rel, no, layer, hl, name))
    for f in findings:
        print(f)
    if findings:
        print("checksrc: %d finding(s)" % len(findings), file=sys.stderr)
        return 1
    print("checksrc: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
