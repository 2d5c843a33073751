#!/usr/bin/python3
"""check_audit_schema.py - keep the audit record schema, audit.c and the real
records in step.

Usage: check_audit_schema.py SCHEMA THRESHOLD_BIN [SOURCE_DIR]

1. SCHEMA is a valid draft 2020-12 schema.
2. Its "kind" enum equals kind_names[] in appservice/audit.c, in the order of
   enum audit_kind in appservice/audit.h, so the three cannot drift.
3. Records made by the real binary validate: `threshold serve` briefly (with
   no homeserver; an invite of the bot from another server gives a
   contact_blocked record), then the audit commands (list, export, verify).
   That yields startup, config_loaded, contact_blocked, shutdown, checkpoint,
   audit_viewed and audit_exported records; each is validated, and so is
   every record line of the export.
4. What a schema cannot say, per appservice/audit.h: "hash" and "prev" come
   first and the rest is the canonical body (keys sorted by UTF-8 bytes, no
   whitespace); hash = SHA-256(prev || SHA-256(body)) recomputes here, in a
   second implementation; prev is the previous record's hash; no reals;
   byte caps.
5. The schema is not vacuous: mutated records (an unknown kind, a missing or
   extra key, a real, an upper-case hash, sealed detail without a subject,
   seq 0, a checkpoint with other details) are rejected.
"""

import copy
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile

import jsonschema

HERE = pathlib.Path(__file__).resolve().parent


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, msg):
        self.problems.append(msg)
        print("FAIL " + msg)


# ---- kinds ----------------------------------------------------------------

def c_kind_names(source_dir):
    """kind_names[] of audit.c, ordered by enum audit_kind of audit.h."""
    audit_h = (source_dir / "appservice" / "audit.h").read_text()
    audit_c = (source_dir / "appservice" / "audit.c").read_text()
    m = re.search(r"enum audit_kind \{(.*?)\};", audit_h, re.S)
    if not m:
        raise SystemExit("audit.h: cannot find enum audit_kind")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    enum = [e.split("=")[0].strip() for e in body.split(",") if e.strip()]
    if enum[-1] != "AUDIT_NKINDS":
        raise SystemExit("audit.h: enum audit_kind does not end with AUDIT_NKINDS: %r" % enum[-3:])
    enum = enum[:-1]
    m = re.search(r"kind_names\[AUDIT_NKINDS\]\s*=\s*\{(.*?)\};", audit_c, re.S)
    if not m:
        raise SystemExit("audit.c: cannot find kind_names[]")
    names = dict(re.findall(r'\[(AUDIT_\w+)\]\s*=\s*"([^"]*)"', m.group(1)))
    nentries = len(re.findall(r"\[AUDIT_", m.group(1)))
    if nentries != len(names):
        raise SystemExit("audit.c: parsed %d of %d kind_names[] entries" % (len(names), nentries))
    return enum, names


def check_kinds(ck, schema, source_dir):
    enum, names = c_kind_names(source_dir)
    missing = [e for e in enum if e not in names]
    if missing:
        ck.fail("audit.c: kind_names[] has no name for %s" % missing)
    extra = sorted(set(names) - set(enum))
    if extra:
        ck.fail("audit.c: kind_names[] names %s, which enum audit_kind lacks" % extra)
    c_order = [names[e] for e in enum if e in names]
    s_order = schema["properties"]["kind"]["enum"]
    if c_order != s_order:
        ck.fail("schema kind enum %r != audit.c kind_names %r" % (s_order, c_order))
    # The comment beside each enum member names it too (audit.h is the definition).
    audit_h = (source_dir / "appservice" / "audit.h").read_text()
    for e in enum:
        m = re.search(r"\b%s\b[^\n]*/\* \"([a-z_]+)\"" % e, audit_h)
        if m and e in names and m.group(1) != names[e]:
            ck.fail("audit.h says %s is %r, audit.c says %r" % (e, m.group(1), names[e]))
    return c_order


# ---- canonical encoding (audit.h, CANONICAL ENCODING) ---------------------

class RealFound(ValueError):
    pass


def reject_real(text):
    raise RealFound(text)


def canon_str(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif o < 0x20:
            out.append("\\u%04X" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canon(v):
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(canon_str(k) + ":" + canon(v[k]) for k in keys) + "}"
    if isinstance(v, list):
        return "[" + ",".join(canon(x) for x in v) + "]"
    if isinstance(v, str):
        return canon_str(v)
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    raise RealFound(repr(v))


def depth(v):
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def check_stored(ck, line, prev_hash, where):
    """Everything about one stored line that the schema cannot express.
    @return (record, its hash) or (None, None)."""
    raw = line.encode("utf-8")
    if len(raw) > 65536:
        ck.fail("%s: %d bytes, over AUDIT_MAX_RECORD" % (where, len(raw)))
    try:
        rec = json.loads(line, parse_float=reject_real)
    except RealFound as e:
        ck.fail("%s: a real number %s" % (where, e))
        return None, None
    body = {k: v for k, v in rec.items() if k not in ("hash", "prev")}
    try:
        btext = canon(body)
    except RealFound as e:
        ck.fail("%s: not canonical: %s" % (where, e))
        return None, None
    expect = '{"hash":"%s","prev":"%s",%s' % (rec.get("hash"), rec.get("prev"), btext[1:])
    if line != expect:
        ck.fail("%s: the stored value is not the canonical body behind hash and prev:\n  %s\n  %s"
                % (where, line[:300], expect[:300]))
    try:
        prev = bytes.fromhex(rec["prev"])
        h = hashlib.sha256(prev + hashlib.sha256(btext.encode("utf-8")).digest()).hexdigest()
    except (KeyError, TypeError, ValueError) as e:
        ck.fail("%s: no usable prev: %s" % (where, e))
        return rec, None
    if h != rec.get("hash"):
        ck.fail("%s: hash %s does not recompute (%s)" % (where, rec.get("hash"), h))
    if prev_hash is not None and rec["prev"] != prev_hash:
        ck.fail("%s: prev %s is not the previous record's hash %s" % (where, rec["prev"], prev_hash))
    for key, cap in (("actor", 255), ("subject", 255), ("room", 255), ("reason", 64)):
        if isinstance(rec.get(key), str) and len(rec[key].encode("utf-8")) > cap:
            ck.fail("%s: %s over %d bytes" % (where, key, cap))
    if depth(rec.get("details")) > 16:
        ck.fail("%s: details nest deeper than 16" % where)
    return rec, h


# ---- making records with the real binary ----------------------------------

def make_records(binary, workdir):
    """Run the daemon and the audit commands; return (list lines, export lines)."""
    sys.path.insert(0, str(HERE.parent / "integration"))
    from standalone import REMOTE_SERVER, Standalone, member_event

    d = Standalone(binary, workdir, audit={"checkpoint_every": 4}).setup()
    d.start()
    try:
        body = {"events": [
            member_event("$schema-%d" % i, "!schema-%d:%s" % (i, REMOTE_SERVER),
                         "@stranger:" + REMOTE_SERVER, d.bot, "invite") for i in range(5)]}
        status, resp = d.put_txn("schema-1", body)
        if status != 200:
            raise SystemExit("the transaction was answered %d %r" % (status, resp))
        rc = d.stop()
        if rc != 0:
            raise SystemExit("threshold serve exited %d on SIGTERM:\n%s" % (rc, d.log_text()[-3000:]))
    finally:
        d.kill()
    # Optional: guest records, where the binary already makes them.
    r = d.run("guest", "create", check=False)
    if r.returncode == 0:
        print("ok   `threshold guest create` made a guest_created record")
    export = os.path.join(workdir, "export.jsonl")
    d.run("audit", "export", "-o", export)
    d.run("audit", "verify", "--file", export)
    d.run("audit", "verify")
    lines = d.run("audit", "list", "--format", "jsonl").stdout.splitlines()
    with open(export) as f:
        exported = f.read().splitlines()
    return lines, exported


# ---- the schema is not vacuous --------------------------------------------

def mutations(rec):
    def m(fn):
        r = copy.deepcopy(rec)
        fn(r)
        return r
    ckpt = m(lambda r: r.update(kind="checkpoint", details={"previous": 0, "extra": 1}))
    return {
        "unknown kind": m(lambda r: r.update(kind="no_such_kind")),
        "missing key": m(lambda r: r.pop("room")),
        "extra key": m(lambda r: r.update(note="x")),
        "real in details": m(lambda r: r.update(details={"x": 1.5})),
        "upper-case hash": m(lambda r: r.update(hash=r["hash"].upper())),
        "sealed without subject": m(lambda r: r.update(subject=None, sealed="A" * 40)),
        "sealed not base64": m(lambda r: r.update(subject="@g:x", sealed="not base64!" * 4)),
        "seq 0": m(lambda r: r.update(seq=0)),
        "seq 1 after a non-zero prev": m(lambda r: r.update(seq=1, prev="1" * 64)),
        "empty subject": m(lambda r: r.update(subject="")),
        "reason over 64": m(lambda r: r.update(reason="r" * 65)),
        "ts a string": m(lambda r: r.update(ts="1700000000000")),
        "details not an object": m(lambda r: r.update(details=[])),
        "checkpoint with other details": ckpt,
    }


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__.split("\n\n")[1])
    schema_path = pathlib.Path(sys.argv[1])
    binary = os.path.abspath(sys.argv[2])
    source_dir = pathlib.Path(sys.argv[3]) if len(sys.argv) == 4 else HERE.parent.parent
    ck = Checker()

    schema = json.loads(schema_path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    print("ok   %s is a valid draft 2020-12 schema" % schema_path.name)

    kinds = check_kinds(ck, schema, source_dir)
    print("ok   kind enum checked against audit.c/audit.h (%d kinds)" % len(kinds))

    workdir = tempfile.mkdtemp(prefix="threshold-audit-schema-")
    try:
        lines, exported = make_records(binary, workdir)
    finally:
        keep = os.environ.get("THRESHOLD_KEEP") == "1"
        if keep:
            print("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    seen = set()
    prev_hash = "0" * 64
    for i, line in enumerate(lines, 1):
        where = "list line %d" % i
        rec, h = check_stored(ck, line, prev_hash, where)
        prev_hash = h
        if rec is None:
            continue
        if rec.get("seq") != i:
            ck.fail("%s: seq %r, expected %d" % (where, rec.get("seq"), i))
        for err in validator.iter_errors(rec):
            ck.fail("%s (%s): %s at %s" % (where, rec.get("kind"), err.message,
                                           "/".join(map(str, err.absolute_path))))
        seen.add(rec.get("kind"))
    want = {"startup", "config_loaded", "contact_blocked", "shutdown", "checkpoint",
            "audit_viewed", "audit_exported"}
    if not want <= seen:
        ck.fail("records of kinds %s were not made" % sorted(want - seen))
    print("ok   %d stored records checked, kinds %s" % (len(lines), ", ".join(sorted(seen))))

    nexp = 0
    for i, line in enumerate(exported[1:], 2):
        obj = json.loads(line)
        if "kind" not in obj:
            continue  # a stub or a checkpoint signature: not a record
        nexp += 1
        for err in validator.iter_errors(obj):
            ck.fail("export line %d: %s" % (i, err.message))
        check_stored(ck, line, None, "export line %d" % i)
    if not nexp:
        ck.fail("the export held no records")
    print("ok   %d exported records checked" % nexp)

    sample = json.loads(next(ln for ln in lines if '"kind":"contact_blocked"' in ln))
    for name, bad in mutations(sample).items():
        if validator.is_valid(bad):
            ck.fail("the schema accepts a record with %s" % name)
    print("ok   the schema rejects %d kinds of bad record" % len(mutations(sample)))

    if ck.problems:
        print("%d problem(s)" % len(ck.problems))
        return 1
    print("all ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
