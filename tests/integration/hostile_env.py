"""Helpers for test_hostile.py: a Threshold daemon with the gateway on, for
the scripted homeserver in fakehs.py (so gateway conversations open without
Synapse), and raw HTTP over sockets for requests a well-behaved client
library will not send."""

import os
import socket

import yaml

from standalone import SERVER_NAME, Standalone, free_port

SERVICE = "helpline"
STAFF = "@staff:" + SERVER_NAME


def gateway_daemon(binary, workdir, hs_url=None, **gateway):
    """A Standalone daemon with the gateway and one public service; @gateway
    overrides gateway.* keys.  Not started."""
    gw_port = free_port()
    gw = {"listen_address": "127.0.0.1", "listen_port": gw_port,
          "public_url": "http://127.0.0.1:%d" % gw_port}
    gw.update(gateway)
    extra = {
        "gateway": gw,
        "services": {SERVICE: {"display_name": "Test Helpline",
                               "staff_room": "!staff:" + SERVER_NAME,
                               "public_entry": True, "public_per_hour": 100000}},
        "roles": {"staff": [STAFF]},
    }
    d = Standalone(binary, workdir, extra=extra)
    d.setup()
    if hs_url:
        with open(d.config_path) as f:
            cfg = yaml.safe_load(f)
        cfg["homeserver"]["url"] = hs_url
        with open(d.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
    d.gw_port = gw_port
    d.gw_url = gw["public_url"]
    return d


# ---- raw HTTP -------------------------------------------------------------

def raw(port, data, timeout=5, shut=False):
    """Send @data as is; (status, [(name, value)], body bytes, raw head).
    Reads one response (Content-Length, or to the close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines or not lines[0].startswith(b"HTTP/1."):
            return None, [], b"", head
        status = int(lines[0].split()[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()))
        hd = dict(headers)
        if data.startswith(b"HEAD ") or status in (204, 304):
            return status, headers, body, head
        if "content-length" in hd:
            n = int(hd["content-length"])
            while len(body) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        else:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return status, headers, body, head
    finally:
        s.close()


def request_bytes(method, path, headers=(), body=b"", host=b"127.0.0.1"):
    """An HTTP/1.1 request as bytes; @path and header values are bytes or str."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode()
    out = b(method) + b" " + b(path) + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n"
    for name, value in headers:
        out += b(name) + b": " + b(value) + b"\r\n"
    if body or method in ("POST", "PUT"):
        out += b"Content-Length: %d\r\n" % len(body)
    return out + b"\r\n" + body


def pid_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def start_limited(d, nofile):
    """Start @d with RLIMIT_NOFILE at @nofile (soft and hard)."""
    return d.start(prefix=("prlimit", "--nofile=%d:%d" % (nofile, nofile), "--"))

