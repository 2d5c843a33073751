#!/usr/bin/python3
"""Play the staff member from a terminal: no Element needed.

A minimal Matrix client (matrix-nio, Debian's python3-matrix-nio) for trying
Threshold on a bare server.  With the demo (scripts/demo.sh) it needs no
options: it reads the homeserver, the staff login and its password from the
demo's data directory.

    scripts/staff.py waiting              the guests waiting (the staff rooms' notices)
    scripts/staff.py join PSEUDONYM|ROOM  join a waiting guest's conversation
    scripts/staff.py read ROOM [-n N]     the last N messages of a room
    scripts/staff.py say ROOM TEXT...     write to the guest
    scripts/staff.py chat ROOM            read as they come and write lines; Ctrl-D leaves
    scripts/staff.py close ROOM           end the conversation (!threshold close)

ROOM is a room id (!abc:localhost) or a pseudonym from `waiting`.

Options: --data DIR (the demo's data, default ./demo-data or
THRESHOLD_DEMO_DIR), or --homeserver URL --user NAME --password-file FILE.
"""

import argparse
import asyncio
import os
import sys

try:
    from nio import (AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse,
                     RoomMessagesResponse, RoomSendResponse, SyncResponse)
except ImportError:
    sys.exit("staff.py needs matrix-nio: apt-get install python3-matrix-nio")

WAITING = " is waiting to talk to "


def fail(msg):
    print("staff.py: %s" % msg, file=sys.stderr)
    sys.exit(1)


def demo_settings(data):
    import yaml
    try:
        with open(os.path.join(data, "threshold.yaml")) as f:
            cfg = yaml.safe_load(f)
        with open(os.path.join(data, "staff-password")) as f:
            password = f.read().strip()
    except OSError as e:
        fail("%s (run scripts/demo.sh first, or give --homeserver, --user, --password-file)" % e)
    return cfg["homeserver"]["url"], "staff", password


class Staff:
    def __init__(self, hs, user, password):
        self.hs, self.user, self.password = hs, user, password
        self.nio = AsyncClient(hs, user, config=AsyncClientConfig(encryption_enabled=False,
                                                                  store_sync_tokens=False))

    async def __aenter__(self):
        r = await self.nio.login(self.password, device_name="staff.py")
        if not isinstance(r, LoginResponse):
            await self.nio.close()
            fail("cannot log in to %s as %s: %s" % (self.hs, self.user, getattr(r, "message", r)))
        r = await self.nio.sync(timeout=0, full_state=True)
        if not isinstance(r, SyncResponse):
            fail("cannot sync: %r" % r)
        return self

    async def __aexit__(self, *exc):
        await self.nio.logout()
        await self.nio.close()

    async def messages(self, room, limit):
        r = await self.nio.room_messages(room, start="", limit=limit)
        if not isinstance(r, RoomMessagesResponse):
            fail("cannot read %s: %s" % (room, getattr(r, "message", r)))
        return [e for e in reversed(r.chunk) if getattr(e, "source", {}).get("type") == "m.room.message"]

    async def waiting(self):
        """[(pseudonym, service words, conversation room)], newest last, from every joined room."""
        found = {}
        for room in list(self.nio.rooms):
            for e in await self.messages(room, 50):
                body = e.source.get("content", {}).get("body", "")
                if WAITING in body and "/#/" in body:
                    name = body.split(WAITING, 1)[0]
                    service = body.split(WAITING, 1)[1].split(".", 1)[0]
                    found[name] = (name, service, body.rsplit("/#/", 1)[1].strip())
        return list(found.values())

    async def resolve(self, what):
        if what.startswith("!"):
            return what
        for name, _service, room in await self.waiting():
            if name == what:
                return room
        fail("no waiting guest called %r (see: staff.py waiting)" % what)

    async def send(self, room, text):
        r = await self.nio.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
        if not isinstance(r, RoomSendResponse):
            fail("cannot send to %s: %s" % (room, getattr(r, "message", r)))

    def show(self, e):
        who = e.sender if e.sender != self.nio.user_id else "you"
        name = self.nio.rooms.get(e.source.get("room_id", ""), None)
        if name and e.sender in name.users:
            who = name.users[e.sender].display_name or who
        print("%s: %s" % (who, e.source.get("content", {}).get("body", "")))


async def main(a):
    if a.homeserver:
        if not (a.user and a.password_file):
            fail("--homeserver needs --user and --password-file")
        with open(a.password_file) as f:
            settings = (a.homeserver, a.user, f.read().strip())
    else:
        settings = demo_settings(a.data)
    async with Staff(*settings) as s:
        if a.cmd == "waiting":
            rows = await s.waiting()
            if not rows:
                print("Nobody is waiting.")
            for name, service, room in rows:
                joined = " (joined)" if room in s.nio.rooms else ""
                print("%-24s %-20s %s%s" % (name, service, room, joined))
        elif a.cmd == "join":
            room = await s.resolve(a.room)
            r = await s.nio.join(room)
            if not isinstance(r, JoinResponse):
                fail("cannot join %s: %s" % (room, getattr(r, "message", r)))
            print("Joined %s. Next: staff.py chat %s" % (room, room))
        elif a.cmd == "read":
            room = await s.resolve(a.room)
            for e in await s.messages(room, a.n):
                s.show(e)
        elif a.cmd == "say":
            await s.send(await s.resolve(a.room), " ".join(a.text))
        elif a.cmd == "close":
            await s.send(await s.resolve(a.room), "!threshold close")
            print("Asked Threshold to close the conversation.")
        elif a.cmd == "chat":
            room = await s.resolve(a.room)
            for e in await s.messages(room, 20):
                s.show(e)
            print("-- type a line and Enter to send; Ctrl-D to leave --")
            await chat(s, room)


async def chat(s, room):
    loop = asyncio.get_running_loop()
    lines = asyncio.Queue()
    loop.add_reader(sys.stdin, lambda: lines.put_nowait(sys.stdin.readline()))
    try:
        while True:
            sync = asyncio.ensure_future(s.nio.sync(timeout=10000))
            line = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({sync, line}, return_when=asyncio.FIRST_COMPLETED)
            if line in done:
                text = line.result()
                if text == "":
                    sync.cancel()
                    return
                if text.strip():
                    await s.send(room, text.rstrip("\n"))
            else:
                line.cancel()
            if sync in done and isinstance(sync.result(), SyncResponse):
                joined = sync.result().rooms.join.get(room)
                for e in joined.timeline.events if joined else []:
                    if e.source.get("type") == "m.room.message" and e.sender != s.nio.user_id:
                        s.show(e)
            elif not sync.done():
                sync.cancel()
    finally:
        loop.remove_reader(sys.stdin)


def parse(argv=None):
    p = argparse.ArgumentParser(description="Play the staff member from a terminal.")
    p.add_argument("--data", default=os.environ.get("THRESHOLD_DEMO_DIR") or "demo-data",
                   help="the demo's data directory (default ./demo-data)")
    p.add_argument("--homeserver", help="the homeserver's URL, instead of --data")
    p.add_argument("--user", help="the staff login (with --homeserver)")
    p.add_argument("--password-file", help="a file holding its password (with --homeserver)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("waiting", help="the guests waiting")
    for name in ("join", "chat", "close"):
        sub.add_parser(name).add_argument("room")
    r = sub.add_parser("read")
    r.add_argument("room")
    r.add_argument("-n", type=int, default=20)
    s = sub.add_parser("say")
    s.add_argument("room")
    s.add_argument("text", nargs="+")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
