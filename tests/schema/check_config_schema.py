#!/usr/bin/python3
"""check_config_schema.py - keep the config schema, config.c and the example in step.

Usage: check_config_schema.py SCHEMA EXAMPLE [CONFIG_C]

1. SCHEMA is a valid draft 2020-12 schema and EXAMPLE validates against it.
2. The options[] table in appservice/config.c and SCHEMA describe the same
   keys, with the same required flags, bounds, defaults and kinds of value.
3. EXAMPLE lists every key of the table.
4. SCHEMA rejects what config.c rejects, for values derived from the table:
   unknown keys, a missing required key, integers just out of range.

A key added to one of the three files and not the others fails here.
"""

import copy
import json
import pathlib
import re
import sys

import jsonschema
import yaml

LOCALPART_PATTERN = "^[a-z0-9._=/-]+$"
URL_PATTERN = "^https?://"
USER_PATTERN = "^@[^:]+:.+$"
ROOM_PATTERN = "^![^:]+:.+$"
LEVELS = ["error", "warn", "info", "debug"]

ROW = re.compile(
    r'\{\s*"(?P<section>[^"]+)",\s*"(?P<key>[^"]+)",\s*(?P<type>OPT_[A-Z]+),\s*'
    r'OFF\(\w+\),\s*(?P<required>[01]),\s*(?P<default>NULL|"[^"]*"),\s*'
    r'(?P<min>\d+),\s*(?P<max>\d+)\s*\}'
)


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, msg):
        self.problems.append(msg)
        print("FAIL " + msg)


def parse_options(config_c):
    """The rows of config.c's options[] table, in order, as dicts."""
    text = config_c.read_text()
    m = re.search(r"static const struct option options\[\] = \{(.*?)\n\};", text, re.S)
    if not m:
        raise SystemExit(f"{config_c}: cannot find the options[] table")
    body = m.group(1)
    rows = [r.groupdict() for r in ROW.finditer(body)]
    # Every row must parse: a row in another shape must not slip past unchecked.
    nrows = len(re.findall(r'\{\s*"', body))
    if nrows != len(rows):
        raise SystemExit(f"{config_c}: parsed {len(rows)} of {nrows} options[] rows; update ROW")
    for r in rows:
        r["required"] = r["required"] == "1"
        r["default"] = None if r["default"] == "NULL" else r["default"][1:-1]
        r["min"], r["max"] = int(r["min"]), int(r["max"])
    return rows


def resolve(schema, node):
    """@node with a local $ref merged in (one level, as this schema uses)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = schema
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    merged = dict(target)
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def check_agreement(ck, schema, rows):
    props = schema.get("properties", {})
    table = {(r["section"], r["key"]): r for r in rows}
    schema_keys = {(s, k) for s, sec in props.items() for k in sec.get("properties", {})}

    for missing in sorted(set(table) - schema_keys):
        ck.fail("config.c has %s.%s, the schema does not" % missing)
    for extra in sorted(schema_keys - set(table)):
        ck.fail("the schema has %s.%s, config.c does not" % extra)

    sections = {r["section"] for r in rows}
    if set(props) != sections:
        ck.fail(f"sections differ: schema {sorted(props)}, config.c {sorted(sections)}")
    if schema.get("additionalProperties") is not False:
        ck.fail("top level: additionalProperties must be false")

    for (section, key), r in table.items():
        sec = props.get(section)
        if not sec or key not in sec.get("properties", {}):
            continue
        name = f"{section}.{key}"
        if sec.get("additionalProperties") is not False:
            ck.fail(f"{section}: additionalProperties must be false")
        if not sec["properties"][key].get("description"):
            ck.fail(f"{name}: no description")
        p = resolve(schema, sec["properties"][key])
        in_required = key in sec.get("required", [])
        if in_required != r["required"]:
            ck.fail(f"{name}: required is {in_required} in the schema, {r['required']} in config.c")
        kind = r["type"]
        if kind in ("OPT_UINT", "OPT_SIZE"):
            if p.get("type") != "integer":
                ck.fail(f"{name}: schema type {p.get('type')!r}, config.c {kind}")
            if (p.get("minimum"), p.get("maximum")) != (r["min"], r["max"]):
                ck.fail(f"{name}: schema range {p.get('minimum')}..{p.get('maximum')},"
                        f" config.c {r['min']}..{r['max']}")
            want_default = int(r["default"]) if r["default"] is not None else None
        elif kind == "OPT_BOOL":
            if p.get("type") != "boolean":
                ck.fail(f"{name}: schema type {p.get('type')!r}, config.c {kind}")
            want_default = {"true": True, "false": False}.get(r["default"])
        elif kind in ("OPT_USERS", "OPT_ROOMS"):
            pattern = USER_PATTERN if kind == "OPT_USERS" else ROOM_PATTERN
            what = "user" if kind == "OPT_USERS" else "room"
            items = resolve(schema, p.get("items", {}))
            if p.get("type") != "array" or items.get("pattern") != pattern:
                ck.fail(f"{name}: must be an array of {what} ids ({pattern}) in the schema")
            want_default = None
        else:
            if p.get("type") != "string" or p.get("minLength") != (None if kind == "OPT_LEVEL" else 1):
                ck.fail(f"{name}: must be a non-empty string in the schema (config.c {kind})")
            want_pattern = {"OPT_URL": URL_PATTERN, "OPT_LOCALPART": LOCALPART_PATTERN,
                            "OPT_ROOM": ROOM_PATTERN}.get(kind)
            if p.get("pattern") != want_pattern:
                ck.fail(f"{name}: schema pattern {p.get('pattern')!r}, want {want_pattern!r} for {kind}")
            if (kind == "OPT_LEVEL") != ("enum" in p) or (kind == "OPT_LEVEL" and p["enum"] != LEVELS):
                ck.fail(f"{name}: enum {p.get('enum')!r} does not fit {kind}")
            want_default = r["default"]
        if p.get("default") != want_default:
            ck.fail(f"{name}: schema default {p.get('default')!r}, config.c {want_default!r}")


def check_example(ck, validator, example, rows):
    for err in validator.iter_errors(example):
        where = ".".join(str(x) for x in err.absolute_path) or "(top level)"
        ck.fail(f"example: {where}: {err.message}")
    if not isinstance(example, dict):
        return
    for r in rows:
        sec = example.get(r["section"])
        if not isinstance(sec, dict) or r["key"] not in sec:
            ck.fail(f"example: does not list {r['section']}.{r['key']}")


def check_rejections(ck, validator, example, rows):
    """The schema must refuse what config.c refuses, for each row of the table."""
    if not isinstance(example, dict) or not validator.is_valid(example):
        return  # already reported

    def expect_invalid(what, doc):
        if validator.is_valid(doc):
            ck.fail(f"schema accepts {what}, config.c refuses it")

    def expect_valid(what, doc):
        if not validator.is_valid(doc):
            ck.fail(f"schema refuses {what}, config.c accepts it")

    doc = copy.deepcopy(example)
    doc["nosuchsection"] = {}
    expect_invalid("an unknown section", doc)
    for section in {r["section"] for r in rows}:
        doc = copy.deepcopy(example)
        doc[section]["no_such_key"] = "x"
        expect_invalid(f"an unknown key in {section}", doc)
    for r in rows:
        name = f"{r['section']}.{r['key']}"

        def with_value(value):
            doc = copy.deepcopy(example)
            doc[r["section"]][r["key"]] = value
            return doc

        if r["required"]:
            doc = copy.deepcopy(example)
            del doc[r["section"]][r["key"]]
            expect_invalid(f"a config without {name}", doc)
        expect_invalid(f"{name} as a mapping", with_value({"a": 1}))
        if r["type"] in ("OPT_UINT", "OPT_SIZE"):
            expect_valid(f"{name}: {r['min']}", with_value(r["min"]))
            expect_valid(f"{name}: {r['max']}", with_value(r["max"]))
            expect_invalid(f"{name}: {r['min'] - 1}", with_value(r["min"] - 1))
            expect_invalid(f"{name}: {r['max'] + 1}", with_value(r["max"] + 1))
            expect_invalid(f"{name}: abc", with_value("abc"))
        elif r["type"] == "OPT_BOOL":
            expect_valid(f"{name}: true", with_value(True))
            expect_invalid(f"{name}: maybe", with_value("maybe"))
        elif r["type"] == "OPT_USERS":
            expect_valid(f"{name}: []", with_value([]))
            expect_invalid(f"{name}: [alice]", with_value(["alice"]))
            expect_invalid(f"{name}: \"@a:b\" (not a list)", with_value("@a:b"))
        elif r["type"] == "OPT_ROOMS":
            expect_valid(f"{name}: []", with_value([]))
            expect_valid(f"{name}: [!a:b]", with_value(["!a:b"]))
            expect_invalid(f"{name}: [#a:b]", with_value(["#a:b"]))
            expect_invalid(f"{name}: \"!a:b\" (not a list)", with_value("!a:b"))
        else:
            expect_invalid(f"{name}: \"\"", with_value(""))
        if r["type"] == "OPT_ROOM":
            expect_invalid(f"{name}: #alias:x", with_value("#alias:x"))
        if r["type"] == "OPT_LOCALPART":
            expect_invalid(f"{name}: Upper", with_value("Upper"))
            expect_invalid(f"{name}: a b", with_value("a b"))
        if r["type"] == "OPT_URL":
            expect_invalid(f"{name}: ftp://x", with_value("ftp://x"))
            expect_valid(f"{name}: https://x", with_value("https://x"))
        if r["type"] == "OPT_LEVEL":
            expect_invalid(f"{name}: verbose", with_value("verbose"))


def check_docs(ck, docs, rows):
    """docs/configuration.md must describe every key (as `section.key`)."""
    text = docs.read_text()
    for r in rows:
        if f"`{r['section']}.{r['key']}`" not in text:
            ck.fail(f"{docs.name}: does not describe {r['section']}.{r['key']}")


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    schema_path, example_path = pathlib.Path(argv[1]), pathlib.Path(argv[2])
    config_c = pathlib.Path(argv[3]) if len(argv) == 4 else \
        pathlib.Path(__file__).resolve().parents[2] / "appservice" / "config.c"

    schema = json.loads(schema_path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load(example_path.read_text())
    rows = parse_options(config_c)

    ck = Checker()
    check_agreement(ck, schema, rows)
    check_example(ck, validator, example, rows)
    check_rejections(ck, validator, example, rows)
    check_docs(ck, config_c.parents[1] / "docs" / "configuration.md", rows)

    if ck.problems:
        n = len(ck.problems)
        print(f"config schema: {n} problem{'s' if n != 1 else ''} ({len(rows)} keys in config.c)")
        return 1
    print(f"config schema: {len(rows)} keys agree across config.c, {schema_path.name}"
          f", {example_path.name} and docs/configuration.md; the example is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
