"""Integration tests: the real Threshold daemon against a real Synapse.

One Synapse (from the cached chroot, see tests/harness/synapse.py) serves the
whole session, with Threshold's registration loaded.  One Threshold process is
shared too; tests that stop or kill it start it again before they finish, and
the `threshold` fixture restarts it if an earlier test left it down.

Environment:
  THRESHOLD_BIN         the daemon (default <repo>/build/threshold)
  THRESHOLD_SOURCE_DIR  the repository (default: two levels up from here)
  THRESHOLD_KEEP=1      keep the work dir and Synapse's data for a post-mortem
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("THRESHOLD_SOURCE_DIR")
                             or os.path.join(HERE, "..", ".."))
BIN = os.path.abspath(os.environ.get("THRESHOLD_BIN")
                      or os.path.join(SOURCE_DIR, "build", "threshold"))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "harness"))
import synapse as harness  # noqa: E402

SERVER_NAME = "localhost"
FEDERATION_PORT = 8448  # other servers reach SERVER_NAME here (no port in the name)
BOT_LOCALPART = "threshold"
BOT_DISPLAYNAME = "Threshold Test Bot"
AS_ID = "threshold"
MAX_BODY_BYTES = 1048576  # the smallest the config allows: cheap to exceed

# Set by the session fixture so that failure reports can show the logs.
_CURRENT = {}


def tail(path, lines=60):
    return harness._tail(path, lines)


class Threshold:
    """The daemon under test, run in the foreground as a child process."""

    def __init__(self, binary, config_path, log_path):
        self.bin = binary
        self.config = config_path
        self.log_path = log_path
        self.proc = None
        self._log_offset = 0

    def run(self, *args, timeout=30, check=True):
        """Run a one-shot subcommand (not serve)."""
        r = subprocess.run([self.bin, "-c", self.config, *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("threshold %s exited %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_since_start(self):
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def start(self, timeout=30):
        """Start `serve` and wait for its "homeserver ping: ok" log line."""
        assert not self.running(), "Threshold already running"
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        log.write(b"\n===== test harness: starting threshold serve =====\n")
        log.flush()
        self._log_offset = log.tell()
        self.proc = subprocess.Popen([self.bin, "-c", self.config, "serve"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "homeserver ping: ok" in self.log_since_start():
                return
            if self.proc.poll() is not None:
                raise AssertionError("threshold serve exited %d during start-up:\n%s"
                                     % (self.proc.returncode, self.log_since_start()[-4000:]))
            time.sleep(0.1)
        raise AssertionError("threshold serve did not log 'homeserver ping: ok' within %ds:\n%s"
                             % (timeout, self.log_since_start()[-4000:]))

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("threshold did not exit within %ds of SIGTERM" % timeout)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill(self):
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def status(self):
        r = self.run("status", "--json")
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError("status --json printed no JSON: %r" % r.stdout)

    def room_status(self, room_id):
        for room in self.status().get("rooms", []):
            if room.get("room_id") == room_id:
                return room
        return None


class Env:
    """Everything a test needs: Synapse, Threshold, tokens, users."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "threshold.yaml")
        self.registration_path = os.path.join(workdir, "registration.yaml")
        self.store_path = os.path.join(workdir, "store")
        self.as_port = harness.free_port()
        self.as_url = "http://127.0.0.1:%d" % self.as_port
        self.bot = "@%s:%s" % (BOT_LOCALPART, SERVER_NAME)
        # Federation on 8448 (where other servers look for "localhost") when
        # that port is free: test_federated_invites.py needs it.
        self.hs = harness.Synapse(os.path.join(workdir, "synapse"),
                                  registrations=[self.registration_path],
                                  server_name=SERVER_NAME,
                                  federation_port=FEDERATION_PORT
                                  if harness.port_is_free(FEDERATION_PORT) else None)
        self.threshold = Threshold(BIN, self.config_path,
                                   os.path.join(workdir, "threshold.log"))
        self.users = {}  # name -> (user_id, password, access_token)
        self.safeguarding_room = None  # set by tests that need alerts, then write_config()
        self.pseudonym_per_room = False  # set by tests of per-room names, then write_config()
        self.services = None  # {name: settings}: set by gateway tests, then write_config()
        self.gateway_settings = {}  # more gateway.* keys (the browser tests' exit_url, page_title)
        self.gw_port = harness.free_port()
        self.gw_url = "http://127.0.0.1:%d" % self.gw_port
        self.staff_rooms = []  # set by tests of staff rooms, then write_config()
        self.sms = None  # the sms: section, set by the SMS channel's tests, then write_config()
        self.whatsapp = None  # the whatsapp: section, set by the WhatsApp channel's tests
        self.safeguarding_settings = {}  # more safeguarding.* keys (the cases tests' deadlines)
        self.admin_token_file = None  # set by erasure tests (a 0600 file), then write_config()
        self.calls = None  # calls.* keys: set by tests of calls, then write_config()

    @property
    def hs_url(self):
        return self.hs.url

    def write_config(self):
        cfg = {
            "homeserver": {"url": self.hs.url, "server_name": SERVER_NAME},
            "appservice": {
                "id": AS_ID,
                "listen_address": "127.0.0.1",
                "listen_port": self.as_port,
                "url": self.as_url,
                "registration": self.registration_path,
                "bot_localpart": BOT_LOCALPART,
                "bot_displayname": BOT_DISPLAYNAME,
                "guest_prefix": "guest_",
                "max_body_bytes": MAX_BODY_BYTES,
                "max_json_depth": 64,
            },
            "store": {"path": self.store_path, "map_size_mb": 64,
                      "dedupe_retention_days": 7},
            "client": {"timeout_ms": 10000, "connect_timeout_ms": 2000,
                       "outbox_max_backoff_ms": 2000},
            "roles": {"staff": ["@staff:" + SERVER_NAME]},
            "safeguarding": {"leads": ["@lead:" + SERVER_NAME]},
            "log": {"level": os.environ.get("THRESHOLD_TEST_LOG_LEVEL", "info")},
        }
        if self.safeguarding_room:
            cfg["safeguarding"]["room"] = self.safeguarding_room
        cfg["safeguarding"].update(self.safeguarding_settings)
        if self.admin_token_file:
            cfg["homeserver"]["admin_token_file"] = self.admin_token_file
        if self.staff_rooms:
            cfg["roles"]["staff_rooms"] = list(self.staff_rooms)
        if self.pseudonym_per_room:
            cfg["guests"] = {"pseudonym_per_room": True}
        if self.calls:
            cfg["calls"] = dict(self.calls)
        if self.services:
            cfg["gateway"] = {"listen_address": "127.0.0.1", "listen_port": self.gw_port,
                              "public_url": self.gw_url, "address_rate_per_minute": 1000,
                              "session_rate_per_minute": 1000,
                              # every test's guests come from 127.0.0.1, and staff
                              # find each by its own "waiting" notice
                              "public_per_address_per_hour": 10000, "waiting_notice_seconds": 0}
            cfg["gateway"].update(self.gateway_settings)
            cfg["services"] = self.services
        if self.sms:
            cfg["sms"] = self.sms
        if self.whatsapp:
            cfg["whatsapp"] = self.whatsapp
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)

    def load_registration(self):
        with open(self.registration_path) as f:
            reg = yaml.safe_load(f)
        self.registration = reg
        self.as_token = reg["as_token"]
        self.hs_token = reg["hs_token"]

    def add_user(self, name, admin=False):
        password = secrets.token_urlsafe(12)
        user_id = self.hs.register_user(name, password, admin=admin)
        r = requests.post(self.hs.url + "/_matrix/client/v3/login", json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": password,
            "initial_device_display_name": "threshold integration tests"}, timeout=30)
        r.raise_for_status()
        body = r.json()
        self.users[name] = (user_id, password, body["access_token"], body["device_id"])
        return user_id

    def token(self, name):
        return self.users[name][2]


@pytest.fixture(scope="session")
def env():
    if not os.access(BIN, os.X_OK):
        pytest.fail("Threshold binary not found at %s (build it, or set THRESHOLD_BIN)" % BIN)
    keep = os.environ.get("THRESHOLD_KEEP") == "1"
    workdir = tempfile.mkdtemp(prefix="threshold-it-")
    e = Env(workdir)
    _CURRENT["env"] = e
    try:
        e.write_config()
        e.threshold.run("generate-registration", "-o", e.registration_path)
        e.load_registration()
        e.hs.start()
        e.add_user("staff")
        e.add_user("admin", admin=True)
        yield e
    finally:
        _CURRENT.pop("env", None)
        try:
            e.threshold.stop()
        finally:
            if keep:
                print("\nkept: work dir %s, Synapse data %s" % (workdir, e.hs.host_dir),
                      file=sys.stderr)
                e.hs.stop()
            else:
                e.hs.cleanup()
                shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def threshold(env):
    """The running daemon (started, or restarted if a test left it down)."""
    if not env.threshold.running():
        env.threshold.stop()  # reap a dead process, if any
        env.threshold.start()
    return env.threshold


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    e = _CURRENT.get("env")
    if e is None or not rep.failed:
        return
    rep.sections.append(("threshold log (tail)", tail(e.threshold.log_path, 80)))
    rep.sections.append(("synapse log (tail)", synapse_tail(e.hs.log_path, 40)))


def synapse_tail(path, lines):
    """The end of Synapse's log without its chatty background-update lines."""
    text = harness._tail(path, 2000)
    keep = [ln for ln in text.splitlines() if "background_updates" not in ln]
    return "\n".join(keep[-lines:])
