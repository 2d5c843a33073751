"""A local stand-in for Meta's WhatsApp Cloud API (Graph API), speaking its
wire format: POST /{version}/{phone_number_id}/messages (JSON, Bearer token)
answered as Meta answers it; GET /{version}/{media_id} giving the media's
URL, size and type; the bytes at that URL (Bearer token again); and
webhooks signed as Meta signs them: X-Hub-Signature-256 = "sha256=" + hex
HMAC-SHA256 of the raw body under the app secret."""

import email.parser
import email.policy
import hashlib
import hmac
import http.server
import json
import threading
import time


def signature(app_secret, body):
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def message(pnid, frm, mid, text=None, ts=None, image=None):
    """A notification carrying one message from number @frm (digits)."""
    m = {"from": frm, "id": mid, "timestamp": str(int(ts if ts is not None else time.time()))}
    if image:
        m.update(type="image", image=image)
    else:
        m.update(type="text", text={"body": text})
    return notification(pnid, {"contacts": [{"profile": {"name": "A person"}, "wa_id": frm}],
                               "messages": [m]})


def status(pnid, mid, st, recipient, ts=None):
    return notification(pnid, {"statuses": [{"id": mid, "status": st, "recipient_id": recipient,
                                             "timestamp": str(int(ts if ts is not None else time.time()))}]})


def notification(pnid, value):
    value = dict({"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550001111", "phone_number_id": pnid}}, **value)
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398",
                                  "changes": [{"field": "messages", "value": value}]}]}).encode()


class FakeMeta:
    def __init__(self, token, phone_number_ids=()):
        self.token = token
        self.phone_number_ids = set(phone_number_ids)
        self.sent = []  # {"path", "auth", "json"}
        self.media = {}  # media id -> (bytes, mime)
        self.fetched = []  # media ids whose bytes were downloaded
        self.uploads = []  # {"path", "fields", "file", "file_type"}: POST /{pnid}/media
        self.hold = 0  # seconds a media download is held before its bytes come (a slow Meta)
        self.asked = []  # media ids whose download was asked for (held or not)
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, code, body, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self):
                if self.headers.get("Authorization") != "Bearer " + fake.token:
                    self._answer(401, json.dumps({"error": {"code": 190, "message": "bad token"}}).encode())
                    return False
                return True

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                if not self._authorised():
                    return
                if self.path.endswith("/messages"):
                    with fake.lock:
                        fake.sent.append({"path": self.path, "json": json.loads(raw)})
                        mid = "wamid.fake%04d" % len(fake.sent)
                    to = fake.sent[-1]["json"].get("to")
                    self._answer(200, json.dumps({"messaging_product": "whatsapp",
                                                  "contacts": [{"input": to, "wa_id": to}],
                                                  "messages": [{"id": mid}]}).encode())
                    return
                if self.path.endswith("/media"):
                    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + raw)
                    up = {"path": self.path, "fields": {}}
                    for part in msg.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        if part.get_filename():
                            up["file"] = part.get_payload(decode=True)
                            up["file_type"] = part.get_content_type()
                        else:
                            up["fields"][name] = part.get_payload(decode=True).decode()
                    with fake.lock:
                        fake.uploads.append(up)
                        mid = "90%014d" % len(fake.uploads)
                    self._answer(200, json.dumps({"id": mid}).encode())
                    return
                self._answer(404, b"{}")

            def do_GET(self):
                if not self._authorised():
                    return
                parts = self.path.strip("/").split("/")
                if parts[0] == "download" and parts[1] in fake.media:
                    fake.asked.append(parts[1])
                    deadline = time.monotonic() + fake.hold
                    while time.monotonic() < deadline and fake.hold:
                        time.sleep(0.05)
                    data, mime = fake.media[parts[1]]
                    fake.fetched.append(parts[1])
                    self._answer(200, data, mime)
                    return
                if len(parts) == 2 and parts[1] in fake.phone_number_ids:
                    self._answer(200, json.dumps({"verified_name": "Test Helpline", "id": parts[1],
                                                  "display_phone_number": "+1 555-000-1111",
                                                  "quality_rating": "GREEN"}).encode())
                    return
                if len(parts) == 2 and parts[1] in fake.media:
                    data, mime = fake.media[parts[1]]
                    self._answer(200, json.dumps({
                        "messaging_product": "whatsapp", "id": parts[1], "mime_type": mime,
                        "sha256": hashlib.sha256(data).hexdigest(), "file_size": len(data),
                        "url": "%s/download/%s" % (fake.url, parts[1])}).encode())
                    return
                self._answer(404, b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def texts_to(self, number):
        with self.lock:
            return [s["json"].get("text", {}).get("body", "") for s in self.sent
                    if s["json"].get("to") == number and s["json"].get("type") == "text"]

    def images_to(self, number):
        with self.lock:
            return [s["json"]["image"] for s in self.sent
                    if s["json"].get("to") == number and s["json"].get("type") == "image"]

    def templates_to(self, number):
        with self.lock:
            return [s["json"]["template"] for s in self.sent
                    if s["json"].get("to") == number and s["json"].get("type") == "template"]

    def wait_text(self, number, words, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.texts_to(number)
            if [t for t in got if words in t]:
                return got
            time.sleep(0.1)
        raise AssertionError("%s never got %r; it got %r" % (number, words, self.texts_to(number)))
