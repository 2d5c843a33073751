"""/metrics and /health against the real Synapse: the exposition parses as
Prometheus text (format 0.0.4, checked by a strict parser here), the counters
move as a guest's conversation goes on, and no user id, pseudonym, room id
or service name appears anywhere in it.
"""

import math
import re

import pytest
import requests
import yaml

from conftest import SERVER_NAME, harness
from gateway import Guest, join_portal, wait_gateway
from helpers import staff_room_with_bot, wait

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
SAMPLE = re.compile(r"^(?P<name>%s)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)(?: (?P<ts>-?\d+))?$" % NAME)
LABELS = re.compile(r"(?:%s(?:,%s)*,?)?" % (LABEL, LABEL))
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse(text):
    """Strict Prometheus text format 0.0.4: {(name, frozenset(labels)): value},
    {family: type}.  Fails on anything the format does not allow."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    types, helps, samples = {}, set(), {}
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line == line.strip() and line, "line %d: blank or padded: %r" % (n, line)
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name), line
            assert name not in helps, "line %d: a second HELP for %s" % (n, name)
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4 and parts[3] in TYPES, "line %d: %r" % (n, line)
            name = parts[2]
            assert name not in types, "line %d: a second TYPE for %s" % (n, name)
            assert not any(k[0] == name for k in samples), "line %d: TYPE after samples" % n
            types[name] = parts[3]
            current = name
            continue
        assert not line.startswith("#"), "line %d: a comment Threshold does not write: %r" % (n, line)
        m = SAMPLE.match(line)
        assert m, "line %d: not a sample: %r" % (n, line)
        name = m.group("name")
        assert name == current, "line %d: %s outside its family %s" % (n, name, current)
        text_labels = m.group("labels") or ""
        assert LABELS.fullmatch(text_labels), "line %d: bad labels: %r" % (n, line)
        pairs = re.findall(LABEL, text_labels)
        labels = frozenset(pairs)
        assert len({k for k, _ in pairs}) == len(pairs), "duplicate label: %r" % line
        try:
            value = float(m.group("value"))
        except ValueError:
            raise AssertionError("line %d: not a number: %r" % (n, line))
        assert not math.isnan(value)
        if types[name] == "counter":
            assert value >= 0, line
        key = (name, labels)
        assert key not in samples, "line %d: a second sample for %r" % (n, key)
        samples[key] = value
    for name in types:
        assert name in helps, "no HELP for " + name
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def test_parser_is_strict():
    good = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 3\n'
    assert parse(good)[0] == {("a_total", frozenset({("x", "1")})): 3.0}
    for bad in ('a_total 1\n', good + 'a_total{x="1"} 4\n', good.rstrip("\n"),
                good + '# TYPE a_total counter\n', good.replace("3", "three"),
                good.replace('x="1"', 'x=1'), good + "\n"):
        with pytest.raises(AssertionError):
            parse(bad)


@pytest.fixture(scope="module")
def metered(env):
    """A service with its staff room, and metrics on a port of their own."""
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "Metrics staff")
    env.services = {"helpline": {"display_name": "Metrics Helpline", "staff_room": staff_room,
                                 "public_entry": True, "public_per_hour": 1000}}
    env.write_config()
    port = harness.free_port()
    with open(env.config_path) as f:
        cfg = yaml.safe_load(f)
    cfg["metrics"] = {"enabled": True, "bind": "127.0.0.1", "port": port}
    with open(env.config_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield {"url": "http://127.0.0.1:%d" % port, "staff_room": staff_room}
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def scrape(url):
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.text, parse(r.text)[0]


def test_metrics_parse_move_and_hold_no_personal_data(env, threshold, metered):
    url = metered["url"]
    health = requests.get(url + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    _, before = scrape(url)
    assert value(before, "threshold_build_info", version=threshold.run("--version").stdout.split()[1]) == 1
    assert value(before, "threshold_store_map_bytes") == 64 * 1048576
    assert value(before, "threshold_audit_records_total") > 0

    guest = Guest(env.gw_url)
    guest.redeem(service="helpline")
    guest.send("hello from the metrics test")
    room = join_portal(env, metered["staff_room"], guest.pseudonym)

    def moved():
        _, s = scrape(url)
        return s if value(s, "threshold_transactions_total") > value(before, "threshold_transactions_total") \
            and value(s, "threshold_gateway_requests_total", route="redeem", code="2xx") \
            == value(before, "threshold_gateway_requests_total", route="redeem", code="2xx") + 1 \
            and value(s, "threshold_outbox_pending") == 0 else None
    after = wait(moved, 30, "the counters to move", step=0.5)
    assert value(after, "threshold_events_total") > value(before, "threshold_events_total")
    assert total(after, "threshold_decisions_total") > total(before, "threshold_decisions_total")
    assert value(after, "threshold_gateway_requests_total", route="send", code="2xx") >= \
        value(before, "threshold_gateway_requests_total", route="send", code="2xx") + 1
    assert value(after, "threshold_store_used_bytes") > 0
    # A parked poll is counted while it waits.
    import threading
    while guest.poll(timeout_ms=500)["events"]:
        pass  # catch up, so that the next poll waits
    t = threading.Thread(target=lambda: guest.get("/feed", params={"since": guest.since,
                                                                   "timeout_ms": 6000}))
    t.start()
    wait(lambda: value(scrape(url)[1], "threshold_gateway_parked_polls") >= 1, 5, "a parked poll", 0.1)
    t.join()

    text, _ = scrape(url)
    for secret in (guest.pseudonym, room, metered["staff_room"], env.bot, "helpline",
                   "Metrics Helpline", SERVER_NAME):
        assert secret not in text, secret
    assert "@" not in text and "!" not in text


def test_health_and_unknown_paths(env, threshold, metered):
    r = requests.get(metered["url"] + "/nothing", timeout=10)
    assert r.status_code == 404
    r = requests.post(metered["url"] + "/metrics", timeout=10)
    assert r.status_code == 405
