"""A user's view of the homeserver, through matrix-nio (independent of Threshold).

Each test runs one coroutine with asyncio.run(); a Client lives inside it.
"""

import asyncio
import time
import urllib.parse

import requests

from nio import (AsyncClient, AsyncClientConfig, JoinedMembersResponse, RoomCreateResponse,
                 RoomInviteResponse, RoomSendResponse, SyncResponse, UploadResponse)


class MatrixError(AssertionError):
    pass


def _check(resp, ok_type, what):
    if not isinstance(resp, ok_type):
        raise MatrixError("%s failed: %r" % (what, resp))
    return resp


class Client:
    """A logged-in user (the token comes from the session's login)."""

    def __init__(self, hs_url, user_id, access_token, device_id):
        cfg = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False,
                                request_timeout=30)
        self.nio = AsyncClient(hs_url, user_id, device_id=device_id, config=cfg)
        self.nio.user_id = user_id
        self.nio.access_token = access_token
        self.nio.device_id = device_id
        self.user_id = user_id

    @classmethod
    def for_user(cls, env, name):
        user_id, _pw, token, device = env.users[name]
        return cls(env.hs_url, user_id, token, device)

    async def close(self):
        await self.nio.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # -- actions -------------------------------------------------------------

    async def create_room(self, name, invite=()):
        r = _check(await self.nio.room_create(name=name, invite=list(invite)),
                   RoomCreateResponse, "creating room %s" % name)
        return r.room_id

    async def invite(self, room_id, user_id):
        _check(await self.nio.room_invite(room_id, user_id), RoomInviteResponse,
               "inviting %s" % user_id)

    async def send_text(self, room_id, body, msgtype="m.text"):
        r = _check(await self.nio.room_send(room_id, "m.room.message",
                                            {"msgtype": msgtype, "body": body}),
                   RoomSendResponse, "sending to %s" % room_id)
        return r.event_id

    async def send_file(self, room_id, data, name, mimetype, msgtype="m.file", extra=None):
        """Upload @data and send it as Element would (unencrypted): the event id."""
        up, _keys = await self.nio.upload(lambda _got, _timeouts: data, content_type=mimetype,
                                          filename=name, filesize=len(data))
        _check(up, UploadResponse, "uploading %s" % name)
        content = {"msgtype": msgtype, "body": name, "url": up.content_uri,
                   "info": {"mimetype": mimetype, "size": len(data)}}
        content.update(extra or {})
        r = _check(await self.nio.room_send(room_id, "m.room.message", content),
                   RoomSendResponse, "sending %s to %s" % (name, room_id))
        return r.event_id

    async def profile(self, user_id):
        return await self.nio.get_profile(user_id)

    async def joined_members(self, room_id):
        r = _check(await self.nio.joined_members(room_id), JoinedMembersResponse,
                   "joined members of %s" % room_id)
        return {m.user_id for m in r.members}

    # -- reading ---------------------------------------------------------------

    async def sync(self, timeout_ms=0):
        return _check(await self.nio.sync(timeout=timeout_ms), SyncResponse, "sync")

    async def wait_for_member(self, room_id, user_id, membership="join", timeout=30):
        """Sync until the room's timeline shows user_id's membership."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = await self.sync(timeout_ms=1000)
            room = r.rooms.join.get(room_id)
            for ev in (room.timeline.events if room else []):
                src = ev.source
                if (src.get("type") == "m.room.member" and src.get("state_key") == user_id
                        and src.get("content", {}).get("membership") == membership):
                    return src
            # a membership that happened before our first sync is in the room state
            nroom = self.nio.rooms.get(room_id)
            if membership == "join" and nroom and user_id in nroom.users \
                    and user_id not in nroom.invited_users:
                return None
        raise MatrixError("%s did not reach membership %r in %s within %ds"
                          % (user_id, membership, room_id, timeout))

    async def history(self, room_id):
        """Every event of the room's timeline, oldest first.

        Paginates back from the newest event (spec: /messages with dir=b and
        no `from`), not from a /sync token: Synapse may answer an initial
        /sync from a cache up to minutes old, and a page from such a token
        misses everything newer."""
        url = "%s/_matrix/client/v3/rooms/%s/messages" % (
            self.nio.homeserver, urllib.parse.quote(room_id, safe=""))
        headers = {"Authorization": "Bearer " + self.nio.access_token}
        params = {"dir": "b", "limit": "100"}
        events = []
        while True:
            r = await asyncio.to_thread(requests.get, url, headers=headers, params=params, timeout=30)
            if r.status_code != 200:
                raise MatrixError("reading %s failed: %s %s" % (room_id, r.status_code, r.text))
            page = r.json()
            chunk = page.get("chunk", [])
            events.extend(chunk)
            if not chunk or not page.get("end"):
                break
            params["from"] = page["end"]
        events.reverse()
        return events


def replies_to(events, sender):
    """Map event_id -> list of events by sender replying to it (m.in_reply_to)."""
    out = {}
    for ev in events:
        if ev.get("sender") != sender or ev.get("type") != "m.room.message":
            continue
        rel = ev.get("content", {}).get("m.relates_to", {})
        target = rel.get("m.in_reply_to", {}).get("event_id")
        if target:
            out.setdefault(target, []).append(ev)
    return out


async def poll(fn, timeout, interval=0.5, what="condition"):
    """Await fn() until it returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = await fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise MatrixError("timed out after %ss waiting for %s" % (timeout, what))
        await asyncio.sleep(interval)


def run(coro):
    return asyncio.run(coro)
