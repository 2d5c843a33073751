#!/usr/bin/python3
"""A real Synapse for tests and the demo, run from the cached Debian chroot.

Synapse runs inside the chroot made by tests/harness/synapse-chroot.sh, so its
config, database, media and copies of the registration files live under the
chroot (in <chroot>/srv/threshold-<random>/).  The chroot shares the host's
network: Synapse listens on 127.0.0.1:<port> of the host and reaches an
application service on the host's loopback.  Synapse needs no /proc or /dev
mounts in the chroot (the device nodes debootstrap creates are enough), so
nothing is mounted.  chroot(2) needs root: run as root, or with sudo.

`stop` keeps the data (a later `start` with the same DIR reuses it);
`stop --purge` (or cleanup()) deletes it.

As a module:

    hs = Synapse(workdir, registrations=[reg_path])
    hs.start()                 # waits for /_matrix/client/versions
    hs.register_user("staff", "pw", admin=True)
    ... hs.url, hs.log_path ...
    hs.restart()               # same port and data
    hs.stop()                  # safe to call twice
    hs.cleanup()               # stop and delete the data inside the chroot

As a command (state is kept in DIR so that later calls find the server):

    synapse.py start --dir DIR --registration REG [--port N]   # prints the URL
    synapse.py register --dir DIR --user NAME (--password PW | --password-file F)
               [--admin] [--exists-ok]
    synapse.py stop --dir DIR [--purge]
    synapse.py url --dir DIR
    synapse.py pid --dir DIR          # the pid of the Synapse of DIR, if it runs (else exit 1)
    synapse.py free-port [--prefer N]

Environment: THRESHOLD_SYNAPSE_ROOT overrides where the chroot lives (the same
variable synapse-chroot.sh reads).
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHROOT_SCRIPT = os.path.join(HERE, "synapse-chroot.sh")
STATE_FILE = "synapse-state.json"

# Generous limits so that test bursts are never throttled.
_FAST = {"per_second": 1000, "burst_count": 10000}
RATE_LIMITS = {
    "rc_message": _FAST,
    "rc_registration": _FAST,
    "rc_registration_token_validity": _FAST,
    "rc_login": {"address": _FAST, "account": _FAST, "failed_attempts": _FAST},
    "rc_admin_redaction": _FAST,
    "rc_joins": {"local": _FAST, "remote": _FAST},
    "rc_joins_per_room": _FAST,
    "rc_key_requests": _FAST,
    "rc_3pid_validation": _FAST,
    "rc_invites": {"per_room": _FAST, "per_user": _FAST, "per_issuer": _FAST},
    "rc_third_party_invite": _FAST,
    "rc_media_create": _FAST,
    "rc_presence": {"per_user": _FAST},
    "rc_delayed_event_mgmt": _FAST,
    "rc_room_creation": _FAST,
    "rc_reports": _FAST,
    "rc_user_directory": _FAST,
}

# Settings that shrink what strangers can learn about Threshold's users.
PRIVACY = {
    "user_directory": {"search_all_users": False},
    "require_auth_for_profile_requests": True,
    "limit_profile_requests_to_users_who_share_rooms": True,
    "include_profile_data_on_invite": False,
    "allow_guest_access": False,
    "presence": {"enabled": False},
    # Redacted events' original content is deleted this long after the
    # redaction (Synapse's default keeps it 7 days; docs/homeserver-hardening.md).
    # Synapse runs the deletion every 5 minutes, so a test that needs the
    # words gone at once relies on the erasure's room purge instead.
    "redaction_retention_period": "1s",
}


class SynapseError(RuntimeError):
    pass


def _sudo():
    """Prefix for commands that need root (chroot(2) does).  Without a terminal
    sudo must not prompt."""
    if os.geteuid() == 0:
        return []
    return ["sudo"] if sys.stdin.isatty() else ["sudo", "-n"]


def _as_root(argv):
    subprocess.run(_sudo() + argv, check=True, stdin=None if sys.stdin.isatty()
                   else subprocess.DEVNULL)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except PermissionError:  # Synapse runs as root; we may not be
        subprocess.run(_sudo() + ["kill", "-%d" % sig, str(pid)], check=False)
    except ProcessLookupError:
        pass


def chroot_root():
    """Path of the chroot holding Synapse, building it once if needed."""
    env = os.environ.get("THRESHOLD_SYNAPSE_ROOT")
    if env and os.path.isfile(os.path.join(env, ".threshold-ready")):
        return env
    out = subprocess.run(["bash", CHROOT_SCRIPT], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    root = out.strip().splitlines()[-1]
    if not os.path.isdir(root):
        raise SynapseError("synapse-chroot.sh printed %r, not a directory" % root)
    return root


def free_port(host="127.0.0.1"):
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host="127.0.0.1"):
    """True if a server could listen on the port now (TIME_WAIT leftovers of
    an earlier server do not count: servers set SO_REUSEADDR, and so do we)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(no log: %s)" % e
    return "\n".join(data.splitlines()[-lines:])


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return True


def _is_synapse(pid, config_path):
    """True if pid runs Synapse with our config (guards against pid reuse)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(b"synapse" in a for a in argv) and config_path.encode() in argv


class Synapse:
    """One Synapse homeserver with its own config and data inside the chroot."""

    def __init__(self, workdir, registrations=(), server_name="localhost", port=None,
                 root=None, name=None, federation_port=None):
        self.workdir = os.path.abspath(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.registrations = [os.path.abspath(r) for r in registrations]
        self.server_name = server_name
        self.root = root or chroot_root()
        self.port = port or free_port()
        self.name = name or "threshold-" + secrets.token_hex(6)
        # With a port: a TLS listener there for federation (a self-signed
        # certificate), so a second homeserver on this machine can talk to
        # this one.  The server name must resolve to it: "localhost" means
        # port 8448, "localhost:N" port N.
        self.federation_port = federation_port
        self.pid = None
        self._configured = False

    # -- paths -------------------------------------------------------------

    @property
    def inner_dir(self):
        """The data directory as Synapse sees it (inside the chroot)."""
        return "/srv/" + self.name

    @property
    def host_dir(self):
        """The same directory as seen from the host."""
        return os.path.join(self.root, "srv", self.name)

    @property
    def config_inner(self):
        return self.inner_dir + "/homeserver.yaml"

    @property
    def config_host(self):
        return os.path.join(self.host_dir, "homeserver.yaml")

    @property
    def log_path(self):
        return os.path.join(self.host_dir, "homeserver.log")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _chroot(self, argv, **kw):
        return subprocess.run(_sudo() + ["chroot", self.root] + argv, **kw)

    # -- configuration -----------------------------------------------------

    def configure(self):
        """Write a fresh config (or refresh an existing one) inside the chroot."""
        if os.geteuid() == 0:
            os.makedirs(self.host_dir, exist_ok=True)
        elif not os.path.isdir(self.host_dir):
            _as_root(["install", "-d", "-m", "0755", "-o", str(os.geteuid()),
                      "-g", str(os.getegid()), self.host_dir])
        if not os.path.exists(self.config_host):
            r = self._chroot(
                ["python3", "-m", "synapse.app.homeserver",
                 "--server-name", self.server_name,
                 "--config-path", self.config_inner,
                 "--data-directory", self.inner_dir,
                 "--generate-config", "--report-stats=no"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                raise SynapseError("generating Synapse's config failed:\n" + r.stdout)
            if os.geteuid() != 0:  # generated as root: make it ours to edit
                _as_root(["chown", "-R", "%d:%d" % (os.geteuid(), os.getegid()),
                          self.host_dir])
        with open(self.config_host) as f:
            cfg = yaml.safe_load(f)

        # Copies of the registration files, read by Synapse at start only.
        as_files = []
        for i, reg in enumerate(self.registrations):
            dest = "registration-%d.yaml" % i
            shutil.copyfile(reg, os.path.join(self.host_dir, dest))
            os.chmod(os.path.join(self.host_dir, dest), 0o600)
            as_files.append(self.inner_dir + "/" + dest)

        log_config = self.inner_dir + "/log.yaml"
        with open(os.path.join(self.host_dir, "log.yaml"), "w") as f:
            yaml.safe_dump({
                "version": 1,
                "formatters": {"precise": {"format":
                    "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"}},
                "handlers": {"file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filename": self.inner_dir + "/homeserver.log",
                    "encoding": "utf8"}},
                "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
                "root": {"level": "INFO", "handlers": ["file"]},
                "disable_existing_loggers": False,
            }, f)

        cfg.update({
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "pid_file": self.inner_dir + "/homeserver.pid",
            "listeners": [{
                "port": self.port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }],
            "database": {"name": "sqlite3",
                         "args": {"database": self.inner_dir + "/homeserver.db"}},
            "media_store_path": self.inner_dir + "/media_store",
            "log_config": log_config,
            "app_service_config_files": as_files,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "report_stats": False,
            # Publication to the room directory allowed (Synapse's default
            # denies it), so that tests can see Threshold take a managed room
            # off it; docs/homeserver-hardening.md recommends denying it.
            "room_list_publication_rules": [{"action": "allow"}],
        })
        if self.federation_port:
            self._federation(cfg)
        cfg.update(PRIVACY)
        cfg.update(RATE_LIMITS)
        with open(self.config_host, "w") as f:
            f.write("# Written by tests/harness/synapse.py; rewritten at each start.\n")
            yaml.safe_dump(cfg, f, sort_keys=False)
        self._configured = True

    def _federation(self, cfg):
        """Federation over TLS on loopback: a self-signed certificate (made
        once), certificates not verified, and loopback allowed as a
        destination (Synapse refuses private addresses by default)."""
        crt = os.path.join(self.host_dir, "federation.crt")
        key = os.path.join(self.host_dir, "federation.key")
        if not os.path.exists(crt):
            host = self.server_name.split(":")[0]
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                                "-days", "30", "-subj", "/CN=" + host, "-keyout", key, "-out", crt],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise SynapseError("making the federation certificate failed:\n" + r.stdout)
        cfg["listeners"].append({
            "port": self.federation_port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": True,
            "x_forwarded": False,
            "resources": [{"names": ["federation", "keys"], "compress": False}],
        })
        cfg.update({
            "tls_certificate_path": self.inner_dir + "/federation.crt",
            "tls_private_key_path": self.inner_dir + "/federation.key",
            "federation_verify_certificates": False,
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],  # "localhost" is both
        })

    @property
    def shared_secret(self):
        with open(self.config_host) as f:
            return yaml.safe_load(f)["registration_shared_secret"]

    # -- lifecycle ---------------------------------------------------------

    def _read_pid(self):
        try:
            with open(os.path.join(self.host_dir, "homeserver.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self):
        pid = self.pid or self._read_pid()
        return bool(pid) and _pid_alive(pid) and _is_synapse(pid, self.config_inner)

    def _versions_ok(self):
        try:
            with urllib.request.urlopen(self.url + "/_matrix/client/versions",
                                        timeout=2) as r:
                return r.status == 200 and "versions" in json.load(r)
        except (OSError, ValueError):
            return False

    def start(self, timeout=60):
        """Start Synapse in the background; return once it answers."""
        if self.running():
            raise SynapseError("Synapse already running (pid %s)" % (self.pid or self._read_pid()))
        if not port_is_free(self.port):
            raise SynapseError("port %d on 127.0.0.1 is taken" % self.port)
        self.configure()
        r = self._chroot(
            ["python3", "-m", "synapse.app.homeserver",
             "--config-path", self.config_inner, "--daemonize"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise SynapseError("Synapse failed to start (exit %d):\n%s\n--- log tail ---\n%s"
                               % (r.returncode, r.stdout, _tail(self.log_path)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pid = self._read_pid()
            if self._versions_ok():
                return self
            if self.pid and not _pid_alive(self.pid):
                raise SynapseError("Synapse exited during start-up; log tail:\n"
                                   + _tail(self.log_path))
            time.sleep(0.2)
        self.stop()
        raise SynapseError("Synapse did not answer %s/_matrix/client/versions within %ds; "
                           "log tail:\n%s" % (self.url, timeout, _tail(self.log_path)))

    def stop(self, timeout=15):
        """Stop Synapse: SIGTERM, then SIGKILL.  Safe to call when not running."""
        pid = self.pid or self._read_pid()
        self.pid = None
        if not pid or not _pid_alive(pid) or not _is_synapse(pid, self.config_inner):
            return
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            _signal(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.05)
        # Wait for the listening socket to be released so a restart can bind it.
        deadline = time.monotonic() + 10
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout=timeout)

    def cleanup(self):
        """Stop Synapse and delete its data directory inside the chroot."""
        self.stop()
        if os.path.isdir(self.host_dir) and self.name.startswith("threshold-"):
            if os.geteuid() == 0:
                shutil.rmtree(self.host_dir, ignore_errors=True)
            else:  # Synapse (root) wrote its database and media there
                _as_root(["rm", "-rf", "--one-file-system", self.host_dir])

    # -- users -------------------------------------------------------------

    def register_user(self, name, password, admin=False, exists_ok=False):
        """Create a local user with the shared-secret registration tool.
        With exists_ok, an existing user is left as it is (password unchanged)."""
        # The password goes through a short-lived file, not the command line.
        pw_name = "password-" + secrets.token_hex(8)
        pw_host = os.path.join(self.host_dir, pw_name)
        fd = os.open(pw_host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        try:
            r = self._chroot(
                ["synapse_register_new_matrix_user", "-c", self.config_inner,
                 "-u", name, "--password-file", self.inner_dir + "/" + pw_name,
                 "--admin" if admin else "--no-admin"]
                + (["--exists-ok"] if exists_ok else []) + [self.url],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                stdin=subprocess.DEVNULL)
        finally:
            os.unlink(pw_host)
        if r.returncode != 0:
            raise SynapseError("registering %s failed: %s" % (name, r.stdout.strip()))
        return "@%s:%s" % (name, self.server_name)

    # -- state for the command-line interface ------------------------------

    def save_state(self):
        state = {"root": self.root, "name": self.name, "port": self.port,
                 "server_name": self.server_name, "registrations": self.registrations}
        path = os.path.join(self.workdir, STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f, indent=1)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_state(cls, workdir):
        with open(os.path.join(workdir, STATE_FILE)) as f:
            st = json.load(f)
        return cls(workdir, st["registrations"], st["server_name"], port=st["port"],
                   root=st["root"], name=st["name"])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _cli(argv=None):
    p = argparse.ArgumentParser(description="Run a real Synapse from the cached chroot.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start Synapse and print its base URL")
    s.add_argument("--dir", required=True, help="state directory")
    s.add_argument("--registration", action="append", default=[],
                   help="application service registration file (repeatable)")
    s.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    s.add_argument("--server-name", default="localhost")
    s.add_argument("--timeout", type=int, default=60)
    t = sub.add_parser("stop", help="stop the Synapse started with the same --dir")
    t.add_argument("--dir", required=True)
    t.add_argument("--purge", action="store_true", help="also delete its data")
    r = sub.add_parser("register", help="create a user")
    r.add_argument("--dir", required=True)
    r.add_argument("--user", required=True)
    pw = r.add_mutually_exclusive_group(required=True)
    pw.add_argument("--password")
    pw.add_argument("--password-file", help="read the password from this file")
    r.add_argument("--admin", action="store_true")
    r.add_argument("--exists-ok", action="store_true",
                   help="succeed, changing nothing, if the user exists")
    u = sub.add_parser("url", help="print the base URL")
    u.add_argument("--dir", required=True)
    i = sub.add_parser("pid", help="print the pid of the Synapse of --dir if it runs; else exit 1")
    i.add_argument("--dir", required=True)
    f = sub.add_parser("free-port", help="print a free TCP port on 127.0.0.1")
    f.add_argument("--prefer", type=int, help="this port, if it is free")
    a = p.parse_args(argv)

    try:
        if a.cmd == "start":
            os.makedirs(a.dir, exist_ok=True)
            hs = None
            if os.path.exists(os.path.join(a.dir, STATE_FILE)):
                old = Synapse.from_state(a.dir)
                if os.path.isdir(old.host_dir):
                    hs = old  # reuse config and data from an earlier run
                    if a.registration:
                        hs.registrations = [os.path.abspath(x) for x in a.registration]
                    if a.port:
                        hs.port = a.port
                    if hs.running():
                        print(hs.url)
                        return 0
            if hs is None:
                hs = Synapse(a.dir, a.registration, a.server_name, port=a.port)
            if not a.port and not port_is_free(hs.port):
                hs.port = free_port()
            hs.configure()
            hs.save_state()
            hs.start(timeout=a.timeout)
            print(hs.url)
        elif a.cmd == "stop":
            if not os.path.exists(os.path.join(a.dir, STATE_FILE)):
                return 0
            hs = Synapse.from_state(a.dir)
            if a.purge:
                hs.cleanup()
                os.unlink(os.path.join(a.dir, STATE_FILE))
            else:
                hs.stop()
        elif a.cmd == "register":
            hs = Synapse.from_state(a.dir)
            password = a.password
            if a.password_file:
                with open(a.password_file) as f:
                    password = f.read().strip()
            print(hs.register_user(a.user, password, admin=a.admin,
                                   exists_ok=a.exists_ok))
        elif a.cmd == "url":
            print(Synapse.from_state(a.dir).url)
        elif a.cmd == "pid":
            if not os.path.exists(os.path.join(a.dir, STATE_FILE)):
                return 1
            hs = Synapse.from_state(a.dir)
            if not hs.running():
                return 1
            print(hs._read_pid())
        elif a.cmd == "free-port":
            print(a.prefer if a.prefer and port_is_free(a.prefer) else free_port())
    except (SynapseError, subprocess.CalledProcessError, OSError) as e:
        print("synapse.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
