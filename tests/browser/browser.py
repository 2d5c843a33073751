"""The Python side of driver.mjs: one Chromium page, driven a command at a time.

    with Browser(width=360, height=640) as b:
        b.goto(url)
        b.click("#n-agree")
        assert b.eval("document.documentElement.dir") == "rtl"

Each method sends one JSON line to the node script and waits for its answer;
an error in the browser is raised here as a BrowserError with the script's
stack.  `problems()` returns what the page did wrong since the last call
(uncaught errors, console errors such as a CSP refusal, requests to another
origin).
"""

import json
import os
import subprocess
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "driver.mjs")


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, width=360, height=640, locale="en-GB", scheme="light", timeout=120, profile=None,
                 args=()):
        self.timeout = timeout
        self._id = 0
        self._stderr = []
        self.proc = subprocess.Popen(["node", DRIVER], cwd=HERE, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        threading.Thread(target=self._drain, daemon=True).start()
        if profile:  # a profile directory on disk, kept after close()
            self.call("launch_persistent", dir=profile, width=width, height=height, locale=locale)
        else:
            self.call("launch", width=width, height=height, locale=locale, scheme=scheme,
                      args=list(args))

    def _drain(self):
        for line in self.proc.stderr:
            self._stderr.append(line)

    def call(self, op, **args):
        self._id += 1
        self.proc.stdin.write(json.dumps({"id": self._id, "op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        result = {}

        def read():
            result["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(self.timeout)
        line = result.get("line")
        if not line:
            raise BrowserError("driver gave no answer to %s (%s)\n%s"
                               % (op, "timed out" if t.is_alive() else "exited",
                                  "".join(self._stderr[-40:])))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BrowserError("%s %s failed:\n%s" % (op, json.dumps(args)[:300], reply.get("error")))
        return reply.get("result")

    def __getattr__(self, op):
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda **args: self.call(op, **args)

    # Positional conveniences for the common commands.
    def goto(self, url):
        return self.call("goto", url=url)

    def click(self, selector, **kw):
        return self.call("click", selector=selector, **kw)

    def fill(self, selector, value):
        return self.call("fill", selector=selector, value=value)

    def press(self, key, times=1, delay=0):
        return self.call("press", key=key, times=times, delay=delay)

    def wait(self, selector, state="visible", timeout=30000):
        return self.call("wait", selector=selector, state=state, timeout=timeout)

    def wait_js(self, expr, timeout=30000):
        return self.call("wait_js", expr=expr, timeout=timeout)

    def eval(self, expr):
        return self.call("eval", expr=expr)

    def text(self, selector):
        return self.call("text", selector=selector)

    def close(self):
        try:
            if self.proc.poll() is None:
                self.call("close")
        except (BrowserError, BrokenPipeError, OSError):
            pass
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
