"""A Threshold daemon with no homeserver behind it, for tests that play the
homeserver's part themselves over the AS API (fault injection, crash loops,
valgrind runs, schema checks).

Threshold runs without a homeserver: homeserver.url points at a closed port,
so its start-up ping and its outbox fail and are retried with back-off, while
the AS API serves transactions as usual.  A transaction answered 200 is
committed to the store.

    d = Standalone(BIN, workdir, audit={"checkpoint_every": 20})
    d.setup()                        # config + registration
    d.start()                        # waits until the AS API answers a ping
    status, body = d.put_txn("t1", {"events": [...]})
    d.kill() / d.stop()
    d.audit_records(kind="contact_blocked")

Only the standard library and PyYAML: tests/schema uses it too.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time

import yaml

SERVER_NAME = "localhost"
BOT_LOCALPART = "threshold"
REMOTE_SERVER = "elsewhere.example"


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_port(host="127.0.0.1"):
    """A loopback port nothing listens on (a homeserver that is not there)."""
    return free_port(host)


def member_event(event_id, room_id, sender, state_key, membership, ts=None):
    return {
        "type": "m.room.member",
        "room_id": room_id,
        "sender": sender,
        "state_key": state_key,
        "event_id": event_id,
        "origin_server_ts": ts if ts is not None else int(time.time() * 1000),
        "content": {"membership": membership},
        "unsigned": {"age": 1},
    }


def message_event(event_id, room_id, sender, body, ts=None):
    return {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "event_id": event_id,
        "origin_server_ts": ts if ts is not None else int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body},
        "unsigned": {"age": 1},
    }


class Standalone:
    """One daemon, its config, registration, store and log in @workdir."""

    def __init__(self, binary, workdir, audit=None, log_level="info", map_size_mb=64, extra=None):
        self.bin = binary
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "threshold.yaml")
        self.registration_path = os.path.join(workdir, "registration.yaml")
        self.store_path = os.path.join(workdir, "store")
        self.log_path = os.path.join(workdir, "threshold.log")
        self.port = free_port()
        self.audit = dict(audit or {})
        self.log_level = log_level
        self.map_size_mb = map_size_mb
        self.extra = dict(extra or {})  # more config sections, e.g. {"roles": {...}}
        self.bot = "@%s:%s" % (BOT_LOCALPART, SERVER_NAME)
        self.proc = None
        self.hs_token = None
        self.as_token = None

    # -- setup --------------------------------------------------------------

    def setup(self):
        os.makedirs(self.workdir, exist_ok=True)
        cfg = {
            "homeserver": {"url": "http://127.0.0.1:%d" % closed_port(),
                           "server_name": SERVER_NAME},
            "appservice": {
                "listen_address": "127.0.0.1",
                "listen_port": self.port,
                "registration": self.registration_path,
                "bot_localpart": BOT_LOCALPART,
            },
            "store": {"path": self.store_path, "map_size_mb": self.map_size_mb},
            "client": {"timeout_ms": 2000, "connect_timeout_ms": 500,
                       "outbox_max_backoff_ms": 5000},
            "log": {"level": self.log_level},
        }
        if self.audit:
            cfg["audit"] = self.audit
        cfg.update(self.extra)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        self.run("generate-registration", "--force")
        with open(self.registration_path) as f:
            reg = yaml.safe_load(f)
        self.hs_token = reg["hs_token"]
        self.as_token = reg["as_token"]
        return self

    # -- one-shot commands --------------------------------------------------

    def run(self, *args, check=True, timeout=60, prefix=()):
        r = subprocess.run([*prefix, self.bin, "-c", self.config_path, *args],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("threshold %s exited %d\nstdout: %s\nstderr: %s"
                                 % (" ".join(args), r.returncode, r.stdout[-4000:],
                                    r.stderr[-4000:]))
        return r

    def audit_records(self, *filters, kind=None):
        """The stored records (`audit list --format jsonl`), parsed.  The
        listing itself appends an audit_viewed record after those returned."""
        args = ["audit", "list", "--format", "jsonl", *filters]
        if kind:
            args += ["--kind", kind]
        r = self.run(*args)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def verify(self, *args):
        return self.run("audit", "verify", *args, check=False)

    # -- serve --------------------------------------------------------------

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self, prefix=(), ready_timeout=15, env=None):
        """Start `serve` (under @prefix, e.g. valgrind) and wait for the AS API."""
        assert not self.running(), "already running"
        with open(self.log_path, "ab") as log:
            log.write(b"\n===== test: starting threshold serve =====\n")
            log.flush()
            self.proc = subprocess.Popen([*prefix, self.bin, "-c", self.config_path, "serve"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("threshold serve exited %d during start-up:\n%s"
                                     % (self.proc.returncode, self.log_text()[-4000:]))
            try:
                if self.ping(timeout=2)[0] == 200:
                    return self
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.005 if not prefix else 0.1)
        raise AssertionError("threshold serve did not answer a ping within %ss:\n%s"
                             % (ready_timeout, self.log_text()[-4000:]))

    def kill(self):
        """SIGKILL: the process dies with no chance to clean up."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self, timeout=20):
        """SIGTERM and wait; the exit status (None if it was not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise AssertionError("threshold did not exit within %ss of SIGTERM" % timeout)
        rc = self.proc.returncode
        self.proc = None
        return rc

    # -- the AS API ---------------------------------------------------------

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _request(self, method, path, body, conn=None, timeout=10):
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=body, headers={
                "Authorization": "Bearer " + self.hs_token,
                "Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if own:
                c.close()

    def put_txn(self, txn_id, body, conn=None, timeout=10):
        """PUT a transaction; @body a dict or bytes.  (status, response bytes);
        raises OSError or HTTPException if the connection fails."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._request("PUT", "/_matrix/app/v1/transactions/" + txn_id, data, conn,
                             timeout)

    def ping(self, timeout=10):
        return self._request("POST", "/_matrix/app/v1/ping",
                             json.dumps({"transaction_id": "test-ping"}).encode(),
                             timeout=timeout)
