#!/usr/bin/python3
"""A real coturn (Debian's turnserver) on loopback, relay only, for the call
tests and the demo (docs/calls.md says how to run one in production).

It listens on 127.0.0.1 only, relays from 127.0.0.1 only, answers only TURN
with credentials minted from a shared secret (use-auth-secret, as Threshold
and Synapse mint them), and logs only to DIR/turnserver.log without verbose
detail.  allow-loopback-peers is here because both ends of a test call are on
this machine; a production server must not have it.

As a module:

    t = Coturn(workdir, secret)
    t.start()          # waits until the UDP port is bound
    ... t.uri ...      # "turn:127.0.0.1:<port>?transport=udp"
    t.stop()           # safe to call twice

As a command (state in DIR, so later calls find the server):

    coturn.py start --dir DIR --secret-file F [--port N]   # prints the URI
    coturn.py stop --dir DIR
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

TURNSERVER = "/usr/bin/turnserver"


def free_udp_port(prefer=None):
    for port in ([prefer] if prefer else []) + [0]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free UDP port")


def config_text(port, secret, pidfile, logfile, min_port, max_port):
    return "\n".join([
        "# written by tests/harness/coturn.py: loopback, relay only",
        "listening-ip=127.0.0.1",
        "relay-ip=127.0.0.1",
        "listening-port=%d" % port,
        "min-port=%d" % min_port,
        "max-port=%d" % max_port,
        "realm=threshold.test",
        "use-auth-secret",
        "static-auth-secret=%s" % secret,
        # TURN only: no STUN answers, no TLS/DTLS listeners here, UDP relays only
        "no-stun",
        "no-tls",
        "no-dtls",
        "no-tcp-relay",
        "no-cli",
        "no-multicast-peers",
        "no-software-attribute",
        "fingerprint",
        # both ends of a test call are on this machine (never in production)
        "allow-loopback-peers",
        "pidfile=%s" % pidfile,
        "log-file=%s" % logfile,
        "simple-log",
        "no-stdout-log",
        "",
    ])


class Coturn:
    def __init__(self, workdir, secret, port=None):
        self.dir = workdir
        self.secret = secret
        self.port = port or free_udp_port()
        self.conf = os.path.join(workdir, "turnserver.conf")
        self.pidfile = os.path.join(workdir, "turnserver.pid")
        self.log_path = os.path.join(workdir, "turnserver.log")
        self.proc = None

    @property
    def uri(self):
        return "turn:127.0.0.1:%d?transport=udp" % self.port

    def start(self, timeout=15):
        os.makedirs(self.dir, exist_ok=True)
        # relay ports: a small range of its own, above the listening port
        lo = 40000 + (self.port % 200) * 100
        old = os.umask(0o077)
        try:
            with open(self.conf, "w") as f:
                f.write(config_text(self.port, self.secret, self.pidfile, self.log_path, lo, lo + 99))
        finally:
            os.umask(old)
        self.proc = subprocess.Popen([TURNSERVER, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        with open(os.path.join(self.dir, "coturn.pid"), "w") as f:
            f.write("%d\n" % self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("turnserver exited (%d); see %s" % (self.proc.returncode, self.log_path))
            if self._bound():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("turnserver did not bind 127.0.0.1:%d" % self.port)

    def _bound(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(("127.0.0.1", self.port))
            return False
        except OSError:
            return True
        finally:
            s.close()

    def stop(self):
        pid = self.proc.pid if self.proc else read_pid(self.dir)
        if pid:
            stop_pid(pid)
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        for p in (os.path.join(self.dir, "coturn.pid"),):
            if os.path.exists(p):
                os.unlink(p)


def read_pid(workdir):
    try:
        with open(os.path.join(workdir, "coturn.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"turnserver" not in f.read():
                return None
    except OSError:
        return None
    return pid


def stop_pid(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start")
    st.add_argument("--dir", required=True)
    st.add_argument("--secret-file", required=True)
    st.add_argument("--port", type=int)
    sp = sub.add_parser("stop")
    sp.add_argument("--dir", required=True)
    a = ap.parse_args()
    if a.cmd == "start":
        with open(a.secret_file) as f:
            secret = f.read().strip()
        t = Coturn(a.dir, secret, free_udp_port(a.port))
        t.start()
        t.proc = None  # leave it running: `stop --dir` ends it by its pid file
        print(t.uri)
    else:
        pid = read_pid(a.dir)
        if pid:
            stop_pid(pid)
        p = os.path.join(a.dir, "coturn.pid")
        if os.path.exists(p):
            os.unlink(p)


if __name__ == "__main__":
    sys.exit(main())
