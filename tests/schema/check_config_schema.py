#!/usr/bin/python3
"""check_config_schema.py - keep the config schema, config.c and the example in step.

Usage: check_config_schema.py SCHEMA EXAMPLE [CONFIG_C]

1. SCHEMA is a valid draft 2020-12 schema and EXAMPLE validates against it.
2. The options[] table in appservice/config.c and SCHEMA describe the same
   keys, with the same required flags, bounds, defaults and kinds of value;
   so do the service_options[] table and SCHEMA's service object (the
   mapping under each services.<name>), which also has "notice".
3. EXAMPLE lists every key of the options[] table, and every service key in
   at least one service.
4. SCHEMA rejects what config.c rejects, for values derived from the tables:
   unknown keys, a missing required key, integers just out of range, bad
   service names and notice languages.
5. docs/configuration.md names every key.

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
LANGUAGE_PATTERN = "^[a-z-]{2,8}$"
SERVICE_NAME_PATTERN = "^[a-z0-9._=/-]{1,64}$"
LEVELS = ["error", "warn", "info", "debug"]
# Keys of a service that config.c reads outside service_options[] (service_extra).
SERVICE_EXTRA_KEYS = {"notice", "concern_keywords", "hours", "holidays", "utc_offset", "signposting",
                      "helper"}
DURATION_PATTERN = "^[0-9]+[smhd]$"

ROW = re.compile(
    r'\{\s*"(?P<section>[^"]+)",\s*"(?P<key>[^"]+)",\s*(?P<type>OPT_[A-Z]+),\s*'
    r'S?OFF\((?P<field>\w+)\),\s*(?P<required>[01]),\s*(?P<default>NULL|"[^"]*"),\s*'
    r'(?P<min>\d+),\s*(?P<max>\d+)\s*\}'
)


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, msg):
        self.problems.append(msg)
        print("FAIL " + msg)


def parse_options(config_c, table="options"):
    """The rows of config.c's @table[] (options or service_options), in order, as dicts."""
    text = config_c.read_text()
    m = re.search(r"static const struct option %s\[\] = \{(.*?)\n\};" % table, text, re.S)
    if not m:
        raise SystemExit(f"{config_c}: cannot find the {table}[] table")
    body = m.group(1)
    rows = [r.groupdict() for r in ROW.finditer(body)]
    # Every row must parse: a row in another shape must not slip past unchecked.
    nrows = len(re.findall(r'\{\s*"', body))
    if nrows != len(rows):
        raise SystemExit(f"{config_c}: parsed {len(rows)} of {nrows} {table}[] rows; update ROW")
    for r in rows:
        r["required"] = r["required"] == "1"
        r["default"] = None if r["default"] == "NULL" else r["default"][1:-1]
        r["min"], r["max"] = int(r["min"]), int(r["max"])
    return rows


def c_strings(text):
    """The concatenated C string literals in @text, unescaped."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    return "".join(bytes(p, "ascii").decode("unicode_escape") for p in parts)


def parse_constants(config_c):
    """What config.c fixes outside its tables: the default languages, the
    default notice, and the limits on services and notices."""
    text = config_c.read_text()
    consts = {}
    m = re.search(r"static const char \*const defaults\[\] = \{([^}]*)\}", text)
    if not m:
        raise SystemExit(f"{config_c}: cannot find the default gateway.languages")
    consts["languages"] = re.findall(r'"([^"]*)"', m.group(1))
    m = re.search(r"#define DEFAULT_NOTICE\s*\\\n((?:.*\\\n)*.*\n)", text)
    if not m:
        raise SystemExit(f"{config_c}: cannot find DEFAULT_NOTICE")
    consts["notice"] = c_strings(m.group(1))
    for name in ("MAX_SERVICES", "MAX_NOTICE_BYTES"):
        m = re.search(r"#define %s\s+(\d+)" % name, text)
        if not m:
            raise SystemExit(f"{config_c}: cannot find {name}")
        consts[name] = int(m.group(1))
    return consts


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


def check_key(ck, schema, sec, label, r, consts):
    """One row of a table against its property in the schema object @sec."""
    key = r["key"]
    name = f"{label}.{key}"
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
    elif kind == "OPT_TURNS":
        items = resolve(schema, p.get("items", {}))
        if p.get("type") != "array" or items.get("type") != "string" \
                or not items.get("pattern", "").startswith("^turns?:"):
            ck.fail(f"{name}: must be an array of TURN URIs (^turns?:...) in the schema")
        want_default = None
    elif kind == "OPT_WORDS":
        items = resolve(schema, p.get("items", {}))
        if p.get("type") != "array" or items.get("type") != "string" \
                or items.get("pattern") != LANGUAGE_PATTERN:
            ck.fail(f"{name}: must be an array of language codes ({LANGUAGE_PATTERN}) in the schema")
        # config.c fills in its defaults[] when the list is absent or empty.
        want_default = consts["languages"] if r["field"] == "gw_languages" else None
    else:
        if p.get("type") != "string" or p.get("minLength") != (None if kind == "OPT_LEVEL" else 1):
            ck.fail(f"{name}: must be a non-empty string in the schema (config.c {kind})")
        want_pattern = {"OPT_URL": URL_PATTERN, "OPT_LOCALPART": LOCALPART_PATTERN,
                        "OPT_ROOM": ROOM_PATTERN, "OPT_DURATION": DURATION_PATTERN}.get(kind)
        if p.get("pattern") != want_pattern:
            ck.fail(f"{name}: schema pattern {p.get('pattern')!r}, want {want_pattern!r} for {kind}")
        if (kind == "OPT_LEVEL") != ("enum" in p) or (kind == "OPT_LEVEL" and p["enum"] != LEVELS):
            ck.fail(f"{name}: enum {p.get('enum')!r} does not fit {kind}")
        want_default = r["default"]
    if p.get("default") != want_default:
        ck.fail(f"{name}: schema default {p.get('default')!r}, config.c {want_default!r}")


def check_agreement(ck, schema, rows, consts):
    props = schema.get("properties", {})
    sections_props = {s: sec for s, sec in props.items() if s != "services"}
    table = {(r["section"], r["key"]): r for r in rows}
    schema_keys = {(s, k) for s, sec in sections_props.items() for k in sec.get("properties", {})}

    for missing in sorted(set(table) - schema_keys):
        ck.fail("config.c has %s.%s, the schema does not" % missing)
    for extra in sorted(schema_keys - set(table)):
        ck.fail("the schema has %s.%s, config.c does not" % extra)

    sections = {r["section"] for r in rows}
    if set(sections_props) != sections:
        ck.fail(f"sections differ: schema {sorted(sections_props)}, config.c {sorted(sections)}")
    if schema.get("additionalProperties") is not False:
        ck.fail("top level: additionalProperties must be false")

    for (section, key), r in table.items():
        sec = props.get(section)
        if not sec or key not in sec.get("properties", {}):
            continue
        if sec.get("additionalProperties") is not False:
            ck.fail(f"{section}: additionalProperties must be false")
        check_key(ck, schema, sec, section, r, consts)


def service_schema(schema):
    """The schema's object for one services.<name>, or None."""
    services = schema.get("properties", {}).get("services")
    if not isinstance(services, dict) or not isinstance(services.get("additionalProperties"), dict):
        return None
    return resolve(schema, services["additionalProperties"])


def check_services_agreement(ck, schema, srows, consts):
    """The services section and its service object against service_options[]."""
    services = schema.get("properties", {}).get("services")
    if not isinstance(services, dict):
        ck.fail("the schema has no services section; config.c reads one")
        return
    if "object" not in services.get("type", []):
        ck.fail("services: must be an object in the schema")
    names = resolve(schema, services.get("propertyNames", {}))
    if names.get("pattern") != SERVICE_NAME_PATTERN:
        ck.fail(f"services: propertyNames pattern {names.get('pattern')!r}, want {SERVICE_NAME_PATTERN!r}")
    if services.get("maxProperties") != consts["MAX_SERVICES"]:
        ck.fail(f"services: maxProperties {services.get('maxProperties')!r},"
                f" config.c MAX_SERVICES {consts['MAX_SERVICES']}")
    svc = service_schema(schema)
    if svc is None:
        ck.fail("services: additionalProperties must be the service object")
        return
    if svc.get("type") != "object" or svc.get("additionalProperties") is not False:
        ck.fail("service: must be an object with additionalProperties false")
    label = "services.<name>"
    table = {r["key"]: r for r in srows}
    schema_keys = set(svc.get("properties", {})) - SERVICE_EXTRA_KEYS
    for missing in sorted(set(table) - schema_keys):
        ck.fail(f"config.c has {label}.{missing}, the schema does not")
    for extra in sorted(schema_keys - set(table)):
        ck.fail(f"the schema has {label}.{extra}, config.c does not")
    for key, r in table.items():
        if key in svc.get("properties", {}):
            check_key(ck, schema, svc, label, r, consts)

    notice = svc.get("properties", {}).get("notice")
    if not isinstance(notice, dict):
        ck.fail(f"the schema has no {label}.notice; config.c reads one")
        return
    if not notice.get("description"):
        ck.fail(f"{label}.notice: no description")
    if "notice" in svc.get("required", []):
        ck.fail(f"{label}.notice: required in the schema, optional in config.c")
    langs = resolve(schema, notice.get("propertyNames", {}))
    text = resolve(schema, notice.get("additionalProperties") or {})
    if notice.get("type") != "object" or langs.get("pattern") != LANGUAGE_PATTERN:
        ck.fail(f"{label}.notice: must be an object keyed by language code ({LANGUAGE_PATTERN})")
    if text.get("type") != "string" or (text.get("minLength"), text.get("maxLength")) != \
            (1, consts["MAX_NOTICE_BYTES"]):
        ck.fail(f"{label}.notice: each text must be a string of 1..{consts['MAX_NOTICE_BYTES']}")
    if notice.get("default") != {"en": consts["notice"]}:
        ck.fail(f"{label}.notice: schema default {notice.get('default')!r},"
                f" config.c {{'en': DEFAULT_NOTICE}}")


def check_example(ck, validator, example, rows, srows):
    for err in validator.iter_errors(example):
        where = ".".join(str(x) for x in err.absolute_path) or "(top level)"
        ck.fail(f"example: {where}: {err.message}")
    if not isinstance(example, dict):
        return
    for r in rows:
        sec = example.get(r["section"])
        if not isinstance(sec, dict) or r["key"] not in sec:
            ck.fail(f"example: does not list {r['section']}.{r['key']}")
    services = example.get("services")
    if not isinstance(services, dict) or not services:
        ck.fail("example: does not list a service under services")
        return
    listed = set().union(*(set(s) for s in services.values() if isinstance(s, dict)))
    for key in [r["key"] for r in srows] + sorted(SERVICE_EXTRA_KEYS):
        if key not in listed:
            ck.fail(f"example: no service lists services.<name>.{key}")


def first_service(example):
    """The name of the example's first service, or None."""
    services = example.get("services") if isinstance(example, dict) else None
    if not isinstance(services, dict):
        return None
    return next((n for n, s in services.items() if isinstance(s, dict)), None)


def check_rejections(ck, validator, example, rows, srows):
    """The schema must refuse what config.c refuses, for each row of the tables."""
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
    def section_of(doc, section):
        """doc's mapping for @section, made if the example leaves it out or empty."""
        if not isinstance(doc.get(section), dict):
            doc[section] = {}
        return doc[section]

    for section in sorted({r["section"] for r in rows}):
        doc = copy.deepcopy(example)
        section_of(doc, section)["no_such_key"] = "x"
        expect_invalid(f"an unknown key in {section}", doc)

    def row_checks(r, label, mapping_of):
        """Checks of one row; mapping_of(doc) is the mapping that holds r's key."""
        name = f"{label}.{r['key']}"

        def with_value(value):
            doc = copy.deepcopy(example)
            mapping_of(doc)[r["key"]] = value
            return doc

        if r["required"]:
            doc = copy.deepcopy(example)
            mapping_of(doc).pop(r["key"], None)
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
        elif r["type"] == "OPT_WORDS":
            expect_valid(f"{name}: []", with_value([]))
            expect_valid(f"{name}: [en, pt-br]", with_value(["en", "pt-br"]))
            for bad in ("e", "EN", "pt_br", "toolongcode", "e1"):
                expect_invalid(f"{name}: [{bad}]", with_value([bad]))
            expect_invalid(f"{name}: en (not a list)", with_value("en"))
        elif r["type"] == "OPT_TURNS":
            expect_valid(f"{name}: []", with_value([]))
            expect_valid(f"{name}: [turn:127.0.0.1:3478?transport=udp]",
                         with_value(["turn:127.0.0.1:3478?transport=udp"]))
            for bad in ("stun:x", "turn:", "turn:user@x", "turn:x:99999x", "turn:x?transport=sctp"):
                expect_invalid(f"{name}: [{bad}]", with_value([bad]))
            expect_invalid(f"{name}: turn:x (not a list)", with_value("turn:x"))
        elif r["type"] == "OPT_ROOMS":
            expect_valid(f"{name}: []", with_value([]))
            expect_valid(f"{name}: [!a:b]", with_value(["!a:b"]))
            expect_invalid(f"{name}: [#a:b]", with_value(["#a:b"]))
            expect_invalid(f"{name}: \"!a:b\" (not a list)", with_value("!a:b"))
        else:
            expect_invalid(f"{name}: \"\"", with_value(""))
        if r["type"] == "OPT_TEXT":
            expect_valid(f"{name}: text over two lines", with_value("Hello.\nWelcome."))
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
        if r["type"] == "OPT_DURATION":
            expect_valid(f"{name}: 30d", with_value("30d"))
            expect_valid(f"{name}: 90m", with_value("90m"))
            expect_invalid(f"{name}: 30", with_value("30"))
            expect_invalid(f"{name}: 2w", with_value("2w"))

    for r in rows:
        row_checks(r, r["section"], lambda doc, s=r["section"]: section_of(doc, s))

    name = first_service(example)
    if name is None:
        return  # check_example reported it
    label = f"services.{name}"

    def service_of(doc):
        return doc["services"][name]

    def with_service(change):
        doc = copy.deepcopy(example)
        change(doc)
        return doc

    for r in srows:
        row_checks(r, label, service_of)
    expect_invalid(f"an unknown key in {label}",
                   with_service(lambda d: service_of(d).update(no_such_key="x")))
    expect_invalid(f"{label} as a scalar",
                   with_service(lambda d: d["services"].update({name: "x"})))
    expect_invalid("services as a list", with_service(lambda d: d.update(services=[name])))
    expect_valid("services left empty", with_service(lambda d: d.update(services=None)))
    for bad in ("Help", "help line", "a" * 65, "", "café"):
        expect_invalid(f"a service named {bad!r}",
                       with_service(lambda d, b=bad: d["services"].update({b: service_of(d)})))
    expect_valid("a service named " + "a" * 64,
                 with_service(lambda d: d["services"].update({"a" * 64: service_of(d)})))

    def set_notice(value):
        return with_service(lambda d: service_of(d).update(notice=value))

    expect_valid(f"{label}.notice: {{}}", set_notice({}))
    expect_valid(f"{label}.notice: {{pt-br: text}}", set_notice({"pt-br": "Olá."}))
    expect_invalid(f"{label}.notice as a string", set_notice("text"))
    expect_invalid(f"{label}.notice as a list", set_notice(["text"]))
    expect_invalid(f"{label}.notice left empty", set_notice(None))
    for bad in ("EN", "e", "english1", "toolongcode"):
        expect_invalid(f"{label}.notice.{bad}", set_notice({bad: "text"}))
    expect_invalid(f"{label}.notice.en: \"\"", set_notice({"en": ""}))
    expect_invalid(f"{label}.notice.en: 16385 bytes", set_notice({"en": "x" * 16385}))
    expect_valid(f"{label}.notice.en: 16384 bytes", set_notice({"en": "x" * 16384}))
    expect_invalid(f"{label}.notice.en as a mapping", set_notice({"en": {"a": 1}}))


def check_docs(ck, docs, rows, srows):
    """docs/configuration.md must describe every key (as `section.key`, and a
    service's as `services.<name>.key`)."""
    text = docs.read_text()
    for r in rows:
        if f"`{r['section']}.{r['key']}`" not in text:
            ck.fail(f"{docs.name}: does not describe {r['section']}.{r['key']}")
    for key in [r["key"] for r in srows] + sorted(SERVICE_EXTRA_KEYS):
        if f"`services.<name>.{key}`" not in text:
            ck.fail(f"{docs.name}: does not describe services.<name>.{key}")


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
    srows = parse_options(config_c, "service_options")
    consts = parse_constants(config_c)

    ck = Checker()
    check_agreement(ck, schema, rows, consts)
    check_services_agreement(ck, schema, srows, consts)
    check_example(ck, validator, example, rows, srows)
    check_rejections(ck, validator, example, rows, srows)
    check_docs(ck, config_c.parents[1] / "docs" / "configuration.md", rows, srows)

    nkeys = f"{len(rows)} keys and {len(srows) + len(SERVICE_EXTRA_KEYS)} service keys"
    if ck.problems:
        n = len(ck.problems)
        print(f"config schema: {n} problem{'s' if n != 1 else ''} ({nkeys} in config.c)")
        return 1
    print(f"config schema: {nkeys} agree across config.c, {schema_path.name}"
          f", {example_path.name} and docs/configuration.md; the example is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
