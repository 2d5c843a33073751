#!/usr/bin/python3
"""A real Kannel on loopback for the SMS tests and the demo: bearerbox with a
fake SMSC, smsbox calling Threshold's SMS listener for each text, and
Kannel's own fakesmsc (Debian kannel-extras) as the person's phone.

Everything listens on 127.0.0.1 only; logs go to DIR.  As a module:

    k = Kannel(workdir, threshold_port, secret)
    k.start()                       # waits until both boxes answer
    ... k.sendsms_url, k.smsc_port ...
    phone = Phone(k, "447700900461", "4477009")
    phone.send("Hello"); phone.wait_for("Reply 1")
    k.stop()                        # safe to call twice

As a command (state in DIR, so later calls find the boxes by their pid files):

    kannel.py start --dir DIR --threshold-port N --secret-file F --service-number NUM
                    [--sendsms-port N]        # prints the sendsms URL
    kannel.py stop --dir DIR
    kannel.py text --dir DIR --from NUMBER [--wait S] [TEXT]
        # TEXT in as NUMBER; prints what comes back (for up to S seconds, or
        # until 3 s after the last reply).  Without TEXT: each line typed is a
        # text (Ctrl-D ends).  Replies that came while no text was being sent
        # wait in bearerbox and come with the next one.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
USERNAME = "threshold"         # smsbox's sendsms-user, as Threshold's config names it
PASSWORD = "sendsms-pass"      # loopback only


def installed():
    return os.access(FAKESMSC, os.X_OK) and os.access(BEARERBOX, os.X_OK) and os.access(SMSBOX, os.X_OK)


def free_port(prefer=None):
    for port in ([prefer] if prefer else []) + [0]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # as Kannel binds: a port whose last connections linger in TIME_WAIT is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free TCP port")


CONF = """
group = core
admin-port = {admin}
admin-password = {admin_password}
admin-interface = 127.0.0.1
smsbox-port = {box}
box-allow-ip = 127.0.0.1
log-file = "{d}/bearerbox.log"
log-level = 1

group = smsc
smsc = fake
smsc-id = fake
port = {smsc}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{d}/smsbox.log"
log-level = 1

group = sendsms-user
username = {user}
password = {password}
max-messages = 10
concatenation = false

group = sms-service
keyword = default
catch-all = true
get-url = "http://127.0.0.1:{tport}/sms/kannel/{secret}?from=%p&to=%P&text=%a&id=%I"
max-messages = 10
concatenation = false
omit-empty = true
accept-x-kannel-headers = true
"""


class Kannel:
    """bearerbox with a fake SMSC, and smsbox calling Threshold for each text."""

    def __init__(self, workdir, threshold_port, secret, sendsms_port=None):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.threshold_port = threshold_port
        self.admin_port, self.box_port, self.smsc_port = (free_port() for _ in range(3))
        self.sendsms_port = free_port(sendsms_port)
        self.conf = os.path.join(self.dir, "kannel.conf")
        old = os.umask(0o077)  # it holds Threshold's secret
        try:
            with open(self.conf, "w") as f:
                f.write(CONF.format(admin=self.admin_port, admin_password=os.urandom(8).hex(),
                                    box=self.box_port, smsc=self.smsc_port, sendsms=self.sendsms_port,
                                    d=self.dir, tport=threshold_port, secret=secret,
                                    user=USERNAME, password=PASSWORD))
        finally:
            os.umask(old)
        self.procs = []

    @property
    def sendsms_url(self):
        return "http://127.0.0.1:%d/cgi-bin/sendsms" % self.sendsms_port

    def _wait_port(self, proc, port, what):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("%s exited (%d); see %s" % (what, proc.returncode, self.dir))
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=1).close()
                return
            except OSError as e:
                if getattr(e, "code", None):  # an HTTP error is an answer
                    return
                time.sleep(0.2)
        raise RuntimeError("%s did not start; see %s" % (what, self.dir))

    def start(self):
        for binary, port in ((BEARERBOX, self.admin_port), (SMSBOX, self.sendsms_port)):
            name = os.path.basename(binary)
            out = open(os.path.join(self.dir, name + ".out"), "wb")
            p = subprocess.Popen([binary, self.conf], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
            out.close()
            self.procs.append(p)
            with open(os.path.join(self.dir, name + ".pid"), "w") as f:
                f.write("%d\n" % p.pid)
            try:
                self._wait_port(p, port, name)
            except RuntimeError:
                self.stop()
                raise
        with open(os.path.join(self.dir, "state.json"), "w") as f:
            json.dump({"smsc_port": self.smsc_port, "sendsms_url": self.sendsms_url}, f)
        return self

    def stop(self):
        for p in reversed(self.procs):
            stop_pid(p.pid)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        stop_dir(self.dir)


def read_pid(workdir, name):
    """The pid in DIR/NAME.pid if that process is still NAME run with DIR's config."""
    try:
        with open(os.path.join(workdir, name + ".pid")) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    conf = os.path.join(workdir, "kannel.conf").encode()
    if not cmd or os.path.basename(cmd[0]) != name.encode() or conf not in cmd:
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


def stop_dir(workdir):
    """Stop smsbox, then bearerbox, by their pid files; 1 if one was running."""
    found = 0
    for name in ("smsbox", "bearerbox"):
        pid = read_pid(workdir, name)
        if pid:
            found = 1
            stop_pid(pid)
        p = os.path.join(workdir, name + ".pid")
        if os.path.exists(p):
            os.unlink(p)
    return found


class Phone:
    """The person's phone: each text goes in through Kannel's fakesmsc, which
    stays connected and prints what the SMSC delivers to it."""

    GOT = re.compile(r"Got message (\d+): <(.*)>$")
    FIELDS = re.compile(r"^(\S+) (\S+) (text|ucs-2|ucs2|data|udh-data|udh-text) (.*)$", re.S)

    def __init__(self, kannel_dir, smsc_port, number, service_number):
        self.dir = kannel_dir
        self.smsc_port = smsc_port
        self.number = number
        self.service_number = service_number
        self.proc = None
        self.outputs = []

    def line(self, text):
        return "%s %s text %s" % (self.number, self.service_number, text)

    def send(self, text):
        self.hang_up()
        path = os.path.join(self.dir, "phone-%d-%d.out" % (os.getpid(), len(self.outputs)))
        self.outputs.append(path)
        out = open(path, "wb")
        # one text now; the second would come after 1000 s: until then it listens
        self.proc = subprocess.Popen([FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc_port),
                                      "-i", "1000", "-m", "2", self.line(text)],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()

    def hang_up(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def received(self):
        """Every text delivered to this phone so far, in order.  The fake SMSC's
        protocol is a line per message: a reply with line breaks comes as
        several "messages", the first with the fields; they are put back."""
        texts = []
        for path in self.outputs:
            msgs = {}
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = self.GOT.search(line.rstrip("\n"))
                    if m:
                        msgs[int(m.group(1))] = m.group(2)  # printed twice: INFO and DEBUG
            for n in sorted(msgs):
                m = self.FIELDS.match(msgs[n])
                if not m:
                    if texts:
                        texts[-1] += "\n" + msgs[n]
                    continue
                frm, to, kind, data = m.groups()
                if kind in ("ucs2", "ucs-2"):  # form-encoded UTF-16
                    data = urllib.parse.unquote_to_bytes(data.replace("+", "%20")).decode("utf-16-be")
                elif kind == "data":
                    data = urllib.parse.unquote_plus(data)
                texts.append(data if to == self.number else None)
        return [t for t in texts if t is not None]

    def wait_for(self, words, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = "".join(self.received())
            if words in got:
                return got
            time.sleep(0.2)
        raise AssertionError("the phone never got %r; it got %r" % (words, self.received()))


def phone_of(workdir, number):
    with open(os.path.join(workdir, "state.json")) as f:
        st = json.load(f)
    return Phone(workdir, st["smsc_port"], number.lstrip("+"), st["service_number"])


def text_once(phone, text, wait, out):
    """TEXT in; print each reply, until WAIT seconds or 3 s after the last one."""
    phone.send(text)
    try:
        shown, deadline, quiet = 0, time.monotonic() + wait, None
        while time.monotonic() < deadline and (quiet is None or time.monotonic() < quiet):
            got = phone.received()
            for t in got[shown:]:
                out.write("<< %s\n" % t.replace("\n", "\n   "))
                out.flush()
                quiet = time.monotonic() + 3
            shown = len(got)
            time.sleep(0.2)
        return shown
    finally:
        phone.hang_up()


def text_chat(phone, wait, out):
    """Each line typed is a text; what comes back is printed after it (a
    reply that came while nothing was connected comes with the next text)."""
    for line in sys.stdin:
        if line.strip():
            text_once(phone, line.strip(), wait, out)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("start")
    st.add_argument("--dir", required=True)
    st.add_argument("--threshold-port", type=int, required=True)
    st.add_argument("--secret-file", required=True)
    st.add_argument("--service-number", required=True, help="the number people text (no +)")
    st.add_argument("--sendsms-port", type=int)
    sp = sub.add_parser("stop")
    sp.add_argument("--dir", required=True)
    tx = sub.add_parser("text")
    tx.add_argument("--dir", required=True)
    tx.add_argument("--from", dest="number", required=True)
    tx.add_argument("--wait", type=float, default=20)
    tx.add_argument("text", nargs="?")
    a = ap.parse_args()
    if a.cmd == "start":
        with open(a.secret_file) as f:
            secret = f.read().strip()
        stop_dir(a.dir)
        k = Kannel(a.dir, a.threshold_port, secret, a.sendsms_port).start()
        k.procs = []  # leave them running: `stop --dir` ends them by their pid files
        with open(os.path.join(a.dir, "state.json")) as f:
            state = json.load(f)
        state["service_number"] = a.service_number.lstrip("+")
        with open(os.path.join(a.dir, "state.json"), "w") as f:
            json.dump(state, f)
        print(k.sendsms_url)
    elif a.cmd == "stop":
        stop_dir(a.dir)
    else:
        if not read_pid(a.dir, "bearerbox"):
            sys.exit("kannel.py: no Kannel running for %s" % a.dir)
        phone = phone_of(a.dir, a.number)
        if a.text:
            return 0 if text_once(phone, a.text, a.wait, sys.stdout) else 1
        text_chat(phone, a.wait, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
