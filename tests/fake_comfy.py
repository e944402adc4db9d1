"""A tiny ComfyUI stand-in on 127.0.0.1 for the client's tests: the HTTP routes the client uses and a /ws websocket
(RFC 6455 server side, unmasked frames out, masked frames in), over plain TCP or TLS. No ComfyUI needed.

    with FakeComfy() as fake:                     # FakeComfy(tls=server_context) for https:// and wss://
        fake.messages = lambda prompt_id: [...]    # sent on /ws once the prompt is queued (str = text, bytes = binary)
        client = ComfyClient(fake.url)
        ...
        fake.requests                               # [(method, path, headers, JSON body or None), ...]

What it answers, as ComfyUI 0.3.75 / 0.33 do: GET /system_stats; POST /prompt -> `answer(body)` (default 200
{"prompt_id", "number", "node_errors": {}}); GET /history/<id> -> {} until the prompt is over, then {id: entry(id)};
GET /view -> b"PNG:<filename>"; GET/POST /queue; POST /interrupt -> 200. A prompt is over once its messages were
sent on a websocket of the same client_id, or at once when no such websocket is open. `finish = False` keeps
every prompt running (in /queue's queue_running) for ever.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import select
import ssl
import threading
import time
import urllib.parse
import uuid

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (a server's)."""
    n = len(payload)
    size = bytes([n]) if n < 126 else (bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                       else bytes([127]) + n.to_bytes(8, "big"))
    return bytes([0x80 | opcode]) + size + payload


def read_ws_frame(rfile) -> tuple[int, bytes]:
    """(opcode, payload) of the next frame from a client (masked, as RFC 6455 requires of clients)."""
    head = rfile.read(2)
    if len(head) < 2:
        return 0x8, b""
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(rfile.read(2), "big")
    elif n == 127:
        n = int.from_bytes(rfile.read(8), "big")
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = rfile.read(n)
    return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def success_entry(prompt_id: str) -> dict:
    return {"status": {"status_str": "success", "completed": True, "messages": [["execution_success", {
                "prompt_id": prompt_id}]]},
            "outputs": {"7": {"text": ["vote table: winner disk-right"]},
                        "9": {"images": [{"filename": "one_node_00001_.png", "subfolder": "videopure",
                                          "type": "output"}]}}}


class FakeComfy:
    def __init__(self, tls: ssl.SSLContext | None = None, websocket: bool = True):
        self.websocket = websocket  # False: /ws answers 404, as behind a proxy that does not pass websockets
        self.finish = True
        self.answer = lambda body: (200, {"prompt_id": str(uuid.uuid4()), "number": 0, "node_errors": {}})
        self.messages = lambda prompt_id: [json.dumps({"type": "executing", "data": {
            "node": None, "prompt_id": prompt_id}})]
        self.entry = success_entry
        self.requests: list[tuple[str, str, dict, object]] = []
        self.queued: dict[str, str] = {}  # prompt_id -> client_id
        self.over: set[str] = set()
        self.deleted: set[str] = set()
        self._lock = threading.RLock()
        self._sockets: set[str] = set()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _, _ in self.requests if method in (None, m)]

    def bodies(self, path: str) -> list:
        return [b for _, p, _, b in self.requests if p == path]

    def _running(self) -> list[list]:
        with self._lock:
            return [[0, p, {}, {}, []] for p in self.queued if p not in self.over]  # /queue delete: pending only

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                fake.requests.append(("GET", url.path, dict(self.headers), None))
                if url.path == "/ws":
                    return self._websocket(urllib.parse.parse_qs(url.query).get("clientId", [""])[0])
                if url.path == "/system_stats":
                    return self._json(200, {"system": {"comfyui_version": "0.3.75"}, "devices": []})
                if url.path.startswith("/history/"):
                    prompt_id = urllib.parse.unquote(url.path[len("/history/"):])
                    with fake._lock:
                        over = prompt_id in fake.over
                    return self._json(200, {prompt_id: fake.entry(prompt_id)} if over else {})
                if url.path == "/queue":
                    return self._json(200, {"queue_running": fake._running(), "queue_pending": []})
                if url.path == "/view":
                    data = b"PNG:" + urllib.parse.parse_qs(url.query)["filename"][0].encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                self._json(404, {})

            def do_POST(self):
                body = self._body()
                fake.requests.append(("POST", self.path, dict(self.headers), body))
                if self.path == "/prompt":
                    status, answer = fake.answer(body)
                    if status == 200:
                        with fake._lock:
                            fake.queued[answer["prompt_id"]] = body.get("client_id")
                            if fake.finish and body.get("client_id") not in fake._sockets:
                                fake.over.add(answer["prompt_id"])
                    return self._json(status, answer)
                if self.path == "/queue":
                    with fake._lock:
                        fake.deleted.update((body or {}).get("delete", []))
                return self._json(200, {}) if self.path in ("/queue", "/interrupt") else self._json(404, {})

            def _websocket(self, client_id: str) -> None:
                if not fake.websocket or self.headers.get("Upgrade", "").lower() != "websocket":
                    return self._json(404, {})
                accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode())
                                          .digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.close_connection = True
                status = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
                self.wfile.write(ws_frame(0x1, json.dumps(status).encode()))
                with fake._lock:
                    fake._sockets.add(client_id)
                deadline, prompt_id = time.monotonic() + 10, None
                while prompt_id is None and time.monotonic() < deadline:
                    if select.select([self.connection], [], [], 0.02)[0]:
                        break  # the client speaks (closes) before queueing anything
                    with fake._lock:
                        prompt_id = next((p for p, c in fake.queued.items() if c == client_id), None)
                if prompt_id is not None and fake.finish:
                    for message in fake.messages(prompt_id):
                        binary = isinstance(message, bytes)
                        self.wfile.write(ws_frame(0x2 if binary else 0x1, message if binary else message.encode()))
                    with fake._lock:
                        fake.over.add(prompt_id)
                self.connection.settimeout(10)
                try:
                    while read_ws_frame(self.rfile)[0] != 0x8:  # until the client closes
                        pass
                    self.wfile.write(ws_frame(0x8, (1000).to_bytes(2, "big")))
                except OSError:
                    pass
                with fake._lock:
                    fake._sockets.discard(client_id)

        return Handler
