#!/usr/bin/python3
"""Text the demo's helpline as a person would, from a terminal: no phone needed.

The demo (scripts/demo.sh) runs Kannel with a fake SMSC; this is the
person's phone, through Kannel's own fakesmsc (Debian kannel-extras).  Each
text goes in as if from the phone number, and what the helpline texts back
is printed.

    scripts/text.py "Hello"          one text; prints the replies
    scripts/text.py                  each line typed is a text (Ctrl-D ends)

A first text gets the language menu; then the notice, YES to agree, and the
greeting.  Staff see "... (by SMS) is waiting" in the staff room
(scripts/staff.py waiting).  Their replies wait in Kannel until the phone is
next connected, i.e. they come back with the next text.

Options: --data DIR (the demo's data, default ./demo-data or
THRESHOLD_DEMO_DIR), --from NUMBER (default +447700900123, a number kept
for drama), --wait S (how long to wait for replies, default 20 s; the
wait ends 3 s after the last reply).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
import kannel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("THRESHOLD_DEMO_DIR") or
                    os.path.join(os.getcwd(), "demo-data"))
    ap.add_argument("--from", dest="number", default="+447700900123")
    ap.add_argument("--wait", type=float, default=20)
    ap.add_argument("text", nargs="*")
    a = ap.parse_args()
    kdir = os.path.join(a.data, "kannel")
    if not kannel.read_pid(kdir, "bearerbox"):
        sys.exit("text.py: the demo's Kannel is not running (start scripts/demo.sh; data: %s)" % a.data)
    phone = kannel.phone_of(kdir, a.number)
    if a.text:
        text = " ".join(a.text)
        print(">> %s" % text, flush=True)
        if kannel.text_once(phone, text, a.wait, sys.stdout):
            return 0
        print("(nothing came back within %g s: is the demo's Threshold running?)" % a.wait)
        return 1
    kannel.text_chat(phone, a.wait, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
