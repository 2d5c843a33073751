"""scripts/staff.py plays the staff member without Element: it lists the
guest waiting, joins the conversation, reads the guest's words, replies (the
guest sees it) and closes the conversation (the guest is told)."""

import os
import subprocess
import sys

import pytest

from conftest import SOURCE_DIR
from gateway import Guest, wait_gateway
from helpers import staff_room_with_bot, wait

STAFF = os.path.join(SOURCE_DIR, "scripts", "staff.py")


@pytest.fixture(scope="module")
def helpline(env):
    if not env.threshold.running():
        env.threshold.stop()
        env.threshold.start()
    staff_room = staff_room_with_bot(env, "CLI staff")
    env.services = {"cli": {"display_name": "CLI Helpline", "staff_room": staff_room,
                            "public_entry": True, "public_per_hour": 1000}}
    env.write_config()
    env.threshold.stop()
    env.threshold.start()
    wait_gateway(env)
    yield staff_room
    env.services = None
    env.write_config()
    env.threshold.stop()
    env.threshold.start()


def staff(env, tmp_path, *args):
    pw = tmp_path / "pw"
    pw.write_text(env.users["staff"][1])
    r = subprocess.run([sys.executable, STAFF, "--homeserver", env.hs_url, "--user", "staff",
                        "--password-file", str(pw), *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_staff_side_in_a_terminal(env, threshold, helpline, tmp_path):
    guest = Guest(env.gw_url)
    guest.redeem(service="cli")
    guest.send("hello, is anyone there?")
    listed = wait(lambda: guest.pseudonym in staff(env, tmp_path, "waiting") and
                  staff(env, tmp_path, "waiting"), 30, "the guest listed as waiting", step=1)
    line = [ln for ln in listed.splitlines() if ln.startswith(guest.pseudonym)][0]
    room = line.split()[-1]
    assert room.startswith("!") and "CLI Helpline" in line, listed

    assert "Joined " + room in staff(env, tmp_path, "join", guest.pseudonym)
    assert "(joined)" in [ln for ln in staff(env, tmp_path, "waiting").splitlines()
                          if ln.startswith(guest.pseudonym)][0]
    assert wait(lambda: "hello, is anyone there?" in staff(env, tmp_path, "read", room), 30,
                "the guest's words", step=1)

    staff(env, tmp_path, "say", room, "Hello, I am here.")
    guest.wait_for(lambda e: e.get("body") == "Hello, I am here.", what="the staff reply")

    staff(env, tmp_path, "close", room)
    guest.wait_for(lambda e: e["kind"] == "closed", what="the closed notice")
