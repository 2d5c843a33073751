"""The Application Service API over real HTTP: authentication, errors, replays.

These tests play the homeserver's part themselves (PUT transactions with the
hs_token) so they can send what a real Synapse would only send by accident.
"""

import json
import secrets
import socket
import time
import uuid
from urllib.parse import urlsplit

import requests

from conftest import MAX_BODY_BYTES


def bearer(token):
    return {"Authorization": "Bearer " + token}


def synthetic_message(room_id, body="hello", sender="@staff:localhost"):
    return {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "event_id": "$" + secrets.token_urlsafe(32),
        "origin_server_ts": int(time.time() * 1000),
        "content": {"msgtype": "m.text", "body": body},
        "unsigned": {"age": 1},
    }


def put_txn(env, txn_id, body, token=None, raw=None):
    url = "%s/_matrix/app/v1/transactions/%s" % (env.as_url, txn_id)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers.update(bearer(token))
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.put(url, data=data, headers=headers, timeout=30)


def errcode(r):
    try:
        return r.json().get("errcode")
    except ValueError:
        return None


def room_events(threshold, room_id):
    room = threshold.room_status(room_id)
    return None if room is None else room.get("events")


def test_replayed_transaction_is_not_processed_twice(env, threshold):
    room = "!replay-%s:localhost" % uuid.uuid4().hex[:12]
    txn = "it-replay-" + uuid.uuid4().hex
    first = {"events": [synthetic_message(room, "first")]}

    r = put_txn(env, txn, first, env.hs_token)
    assert r.status_code == 200 and r.json() == {}, (r.status_code, r.text)
    assert room_events(threshold, room) == 1, threshold.status()

    # A replay is acknowledged but not processed: the transaction count does not
    # move.  (Synapse may deliver a real transaction in between; a replay that
    # is processed moves the count on every try, so three tries tell them apart.)
    counts = []
    for _ in range(3):
        before = threshold.status()["transactions"]
        r = put_txn(env, txn, first, env.hs_token)
        assert r.status_code == 200 and r.json() == {}, (r.status_code, r.text)
        after = threshold.status()["transactions"]
        counts.append(after - before)
        if after == before:
            break
    assert 0 in counts, "each replay was counted as a new transaction: %r" % counts
    assert room_events(threshold, room) == 1, threshold.status()

    # The same event id again in a new transaction (Synapse does resend): still one.
    r = put_txn(env, "it-replay-" + uuid.uuid4().hex, first, env.hs_token)
    assert r.status_code == 200, r.text
    assert room_events(threshold, room) == 1, threshold.status()

    # The same txnId with a different body is a new transaction (a homeserver whose
    # counter was reset): it is processed.
    second = {"events": [synthetic_message(room, "second")]}
    r = put_txn(env, txn, second, env.hs_token)
    assert r.status_code == 200, r.text
    assert room_events(threshold, room) == 2, threshold.status()


def test_transaction_auth_and_error_answers(env, threshold):
    room = "!auth-%s:localhost" % uuid.uuid4().hex[:12]
    txn = "it-auth-" + uuid.uuid4().hex
    body = {"events": [synthetic_message(room, "authenticated only")]}

    r = put_txn(env, txn, body, token=None)
    assert r.status_code == 401 and errcode(r) == "M_UNAUTHORIZED", (r.status_code, r.text)

    r = put_txn(env, txn, body, token=env.hs_token[::-1] + "x")
    assert r.status_code == 403 and errcode(r) == "M_FORBIDDEN", (r.status_code, r.text)

    # The as_token is not the hs_token.
    r = put_txn(env, txn, body, token=env.as_token)
    assert r.status_code == 403 and errcode(r) == "M_FORBIDDEN", (r.status_code, r.text)

    r = put_txn(env, "it-bad-" + uuid.uuid4().hex, None, env.hs_token, raw=b'{"events": [')
    assert r.status_code == 400 and errcode(r) == "M_NOT_JSON", (r.status_code, r.text)

    r = requests.get(env.as_url + "/_matrix/app/v1/no-such-endpoint",
                     headers=bearer(env.hs_token), timeout=30)
    assert r.status_code == 404 and errcode(r) == "M_UNRECOGNIZED", (r.status_code, r.text)

    status, _ = put_oversized(env, "it-big-" + uuid.uuid4().hex, MAX_BODY_BYTES + 4096)
    assert status == 413, "oversized body answered %s" % status

    # Nothing refused above was remembered: the same transaction, now properly
    # authenticated, is processed.
    assert threshold.room_status(room) is None, threshold.status()
    r = put_txn(env, txn, body, env.hs_token)
    assert r.status_code == 200, r.text
    assert room_events(threshold, room) == 1, threshold.status()

    # And the daemon is still serving after all that.
    r = put_txn(env, "it-after-" + uuid.uuid4().hex, {"events": []}, env.hs_token)
    assert r.status_code == 200, r.text


def put_oversized(env, txn_id, size):
    """PUT a valid-JSON body of `size` bytes over a raw socket.

    The server may answer before reading the whole body and close the
    connection, so a failing send is not an error: the answer is what counts.
    """
    u = urlsplit(env.as_url)
    filler = size - len(b'{"events":[],"pad":""}')
    payload = b'{"events":[],"pad":"' + b"x" * filler + b'"}'
    head = ("PUT /_matrix/app/v1/transactions/%s HTTP/1.1\r\nHost: %s\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n"
            % (txn_id, u.netloc, env.hs_token, len(payload))).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        try:
            s.sendall(head + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    headers, _, rest = data.partition(b"\r\n\r\n")
                    length = [int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(rest) >= length[0]:
                        break
        except ConnectionResetError:
            pass
    if not data.startswith(b"HTTP/1."):
        raise AssertionError("no HTTP answer to an oversized body (got %r)" % data[:200])
    return int(data.split(b" ", 2)[1]), data
