"""scripts/demo.sh always cleans up: however it ends (Ctrl-C in a terminal,
SIGINT or SIGTERM when it runs in the background, Threshold exiting by
itself, a step that fails) no Threshold, Synapse, coturn or Kannel of its own
is left behind, and a run after one that could not clean up (kill -9) finds
what was left, says so and stops it.  The command it prints to text the
helpline as a person works: the language menu comes back.

The demo runs with a data directory of its own (THRESHOLD_DEMO_SKIP_SETUP=1:
the binary and the Synapse chroot are there already).  The first run makes
the data; the others reuse it, as a second demo run does.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml

import coturn
import kannel
from conftest import SOURCE_DIR, harness

DEMO = os.path.join(SOURCE_DIR, "scripts", "demo.sh")
READY = "Threshold's log follows"


class Demo:
    def __init__(self, data):
        self.data = data
        env = dict(os.environ, THRESHOLD_DEMO_SKIP_SETUP="1")
        self.proc = subprocess.Popen(["bash", DEMO, data], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.output:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError("the demo did not get ready:\n" + self.output[-4000:])

    def wait_exit(self, timeout=60):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the demo did not end within %ds:\n%s"
                                 % (timeout, self.output[-4000:]))
        self.reader.join(5)
        return rc


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open("/proc/%d/stat" % pid) as f:  # a zombie is gone for our purposes
        return f.read().split(") ", 1)[1][0] != "Z"


def pids(data):
    """The demo's Threshold and Synapse pids while it runs."""
    with open(os.path.join(data, "threshold.pid")) as f:
        threshold = int(f.read())
    r = subprocess.run([sys.executable, harness.__file__, "pid", "--dir",
                        os.path.join(data, "synapse")], stdout=subprocess.PIPE, text=True)
    assert r.returncode == 0, "no Synapse running for the demo"
    return threshold, int(r.stdout)


def helper_pids(data):
    """What the demo started for calls and texts: coturn, bearerbox, smsbox."""
    found = {"coturn": coturn.read_pid(os.path.join(data, "coturn")),
             "bearerbox": kannel.read_pid(os.path.join(data, "kannel"), "bearerbox"),
             "smsbox": kannel.read_pid(os.path.join(data, "kannel"), "smsbox")}
    assert all(found.values()), found
    return found


def assert_all_gone(demo, threshold, synapse, helpers=None):
    for name, pid in [("Threshold", threshold), ("Synapse", synapse)] + sorted((helpers or {}).items()):
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "%s (pid %d) was left running:\n%s" % (name, pid, demo.output[-3000:])
    assert not os.path.exists(os.path.join(demo.data, "threshold.pid"))


@pytest.fixture(scope="module")
def data():
    d = tempfile.mkdtemp(prefix="threshold-demo-")
    yield os.path.join(d, "demo-data")
    subprocess.run([sys.executable, harness.__file__, "stop", "--dir",
                    os.path.join(d, "demo-data", "synapse"), "--purge"], check=False)
    shutil.rmtree(d, ignore_errors=True)


def run_and_stop(data, stop):
    demo = Demo(data)
    demo.wait_ready()
    threshold, synapse = pids(data)
    helpers = helper_pids(data)
    assert alive(threshold) and alive(synapse)
    stop(demo, threshold)
    rc = demo.wait_exit()
    assert_all_gone(demo, threshold, synapse, helpers)
    return demo, rc


def test_ctrl_c_in_a_terminal(data):
    # A terminal's Ctrl-C goes to the whole foreground process group.
    demo, rc = run_and_stop(data, lambda d, _: os.killpg(d.proc.pid, signal.SIGINT))
    assert rc == 130, demo.output[-2000:]
    # An ordinary start says nothing alarming.
    assert "dropped" not in demo.output, demo.output


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_backgrounded_script(data, sig, code):
    demo, rc = run_and_stop(data, lambda d, _: d.proc.send_signal(sig))
    assert rc == code, demo.output[-2000:]


def test_threshold_exiting_by_itself(data):
    demo, rc = run_and_stop(data, lambda d, pid: os.kill(pid, signal.SIGKILL))
    assert "Threshold exited by itself" in demo.output, demo.output[-2000:]
    assert rc != 0


def test_a_failed_step(data):
    config = os.path.join(data, "threshold.yaml")
    with open(config) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    url = cfg["homeserver"]["url"]
    # Synapse starts, then the demo finds it answers elsewhere than the config says.
    with open(config, "w") as f:
        f.write(text.replace(url, url.replace("127.0.0.1", "localhost")))
    try:
        demo = Demo(data)
        rc = demo.wait_exit(timeout=120)
        assert rc == 1 and "fix one of them" in demo.output, demo.output[-2000:]
        assert "stopping Synapse" in demo.output
        r = subprocess.run([sys.executable, harness.__file__, "pid", "--dir",
                            os.path.join(data, "synapse")], stdout=subprocess.PIPE)
        assert r.returncode == 1, "Synapse was left running"
    finally:
        with open(config, "w") as f:
            f.write(text)


def test_a_rerun_stops_what_a_killed_run_left(data):
    demo = Demo(data)
    demo.wait_ready()
    threshold, synapse = pids(data)
    helpers = helper_pids(data)
    os.kill(demo.proc.pid, signal.SIGKILL)  # nothing can clean up after this
    demo.wait_exit()
    assert alive(threshold) and alive(synapse)
    assert all(alive(p) for p in helpers.values()), helpers
    again = Demo(data)
    again.wait_ready()
    out = again.output
    assert "a Threshold from an earlier run (pid %d) is still running; stopping it" % threshold in out
    assert "a Synapse from an earlier run (pid %d) is still running; stopping it" % synapse in out
    assert not alive(threshold) and not alive(synapse)
    assert not any(alive(p) for p in helpers.values()), helpers
    t2, s2 = pids(data)
    h2 = helper_pids(data)
    again.proc.send_signal(signal.SIGTERM)
    again.wait_exit()
    assert_all_gone(again, t2, s2, h2)


def test_text_the_helpline_as_a_person(data):
    """The demo prints one command to text the helpline; run as printed, the
    person's text goes in through Kannel and the language menu comes back."""
    demo = Demo(data)
    demo.wait_ready()
    threshold, synapse = pids(data)
    helpers = helper_pids(data)
    try:
        line = [ln.strip() for ln in demo.output.splitlines() if "scripts/text.py" in ln]
        assert len(line) == 1, demo.output[-3000:]
        r = subprocess.run(line[0], shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        assert r.returncode == 0, r.stdout
        assert r.stdout.startswith(">> Hello\n<< "), r.stdout
        assert "Reply with the number of your language" in r.stdout, r.stdout
    finally:
        demo.proc.send_signal(signal.SIGTERM)
        demo.wait_exit()
    assert_all_gone(demo, threshold, synapse, helpers)
