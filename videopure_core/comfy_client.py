"""Talk to a ComfyUI server over HTTP (standard library only): start one, queue workflows, follow progress.

Used by the headless command `videopure comfy-run`, by the real-ComfyUI tests (tests/comfyui) and by hand; works
with ComfyUI 0.3.75 and 0.33. This module never imports ComfyUI::

    from videopure_core.comfy_client import ComfyUIServer, load_workflow, run_workflow

    server = ComfyUIServer("http://127.0.0.1:8188")                 # a server that is already running
    result = run_workflow(server, load_workflow("workflows/api/videopure_one_node.json"))
    print(result.texts)                                            # {node_id: [vote table, ...]}
    png = server.view(**result.images[0])                          # bytes of the first output image

    with ComfyUIServer.start("ComfyUI", python="venv/bin/python", log_path="comfy.log") as server:
        ...                                                        # a server of our own, stopped on exit

`ComfyUIServer(url)` attaches to a running server (stop() then does nothing); `ComfyUIServer.start(...)` runs one
as a subprocess. `WebSocket` is a minimal client for ComfyUI's /ws progress messages.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


# Talk to 127.0.0.1 directly even when http_proxy/HTTP_PROXY are set in the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PromptRejected(RuntimeError):
    """POST /prompt answered 400: the prompt failed validation. `.body` is ComfyUI's JSON answer
    ({"error": {"type", "message", "details", "extra_info"}, "node_errors": {node_id: {...}}})."""

    def __init__(self, body):
        self.body = body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"prompt rejected: {error.get('message', body)} {error.get('details', '')}".strip())


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (there is a small race until the server binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ignores_sigint(pid: int) -> bool:
    """True when Linux says the process ignores SIGINT (inherited SIG_IGN; Python then installs no handler)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
        return bool(mask & (1 << (signal.SIGINT - 1)))
    except (OSError, StopIteration, ValueError):
        return False


class ComfyUIServer:
    """A ComfyUI server at `url`, optionally owning the subprocess that runs it."""

    def __init__(self, url: str, process: subprocess.Popen | None = None, log_path: str | None = None):
        self.url = url.rstrip("/")
        self.process = process
        self.log_path = log_path
        self._log_file = None

    # -- life cycle -------------------------------------------------------------------------------

    @classmethod
    def start(cls, comfyui_dir, python=sys.executable, port=None, extra_model_paths=None, extra_args=(),
              log_path=None, timeout=180.0, cpu=True, base_directory=None, env=None) -> "ComfyUIServer":
        """Run `python main.py --listen 127.0.0.1 --port PORT [--cpu] [--extra-model-paths-config YAML...]
        EXTRA_ARGS` in `comfyui_dir`, with stdout and stderr going to `log_path` (a temporary file when None),
        and wait until GET /system_stats answers. `extra_model_paths` is one yaml path or a list of them; every
        custom_nodes folder they name must exist (ComfyUI crashes at start-up otherwise).
        `base_directory`, when given, keeps the ComfyUI tree untouched: input/, output/, temp/, user/, models/
        and custom_nodes/ live there (custom_nodes/ is created) and the database is in memory.
        Raises RuntimeError (with the log's tail) if the server exits or is not up within `timeout` seconds."""
        port = port or free_port()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is already in use (a server left running?)")
        cmd = [str(python), "main.py", "--listen", "127.0.0.1", "--port", str(port)]
        if cpu:
            cmd.append("--cpu")
        if base_directory:
            os.makedirs(os.path.join(base_directory, "custom_nodes"), exist_ok=True)
            cmd += ["--base-directory", os.path.abspath(base_directory), "--database-url", "sqlite:///:memory:"]
        if extra_model_paths:
            paths = [extra_model_paths] if isinstance(extra_model_paths, (str, os.PathLike)) else extra_model_paths
            cmd += ["--extra-model-paths-config", *[os.path.abspath(p) for p in paths]]
        cmd += [str(a) for a in extra_args]
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="comfyui-", suffix=".log")
            os.close(fd)
        env = dict(os.environ if env is None else env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # so print() from nodes reaches the log at once
        log_file = open(log_path, "wb")
        process = subprocess.Popen(cmd, cwd=str(comfyui_dir), stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=(os.name == "posix"))
        server = cls(f"http://127.0.0.1:{port}", process, str(log_path))
        server._log_file = log_file
        try:
            server.wait_until_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_until_ready(self, timeout=180.0) -> dict:
        """Poll GET /system_stats until it answers; return its JSON."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} during start-up; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            try:
                return self.system_stats()
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, timeout=10.0) -> int | None:
        """Stop the server we started: Ctrl-C (SIGINT, ComfyUI then logs "Stopped server" and empties its temp
        folder) unless the process ignores SIGINT (as children of a non-interactive shell's background job
        do), then SIGTERM, then SIGKILL, each given `timeout` seconds. Returns its exit code."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            signals = [signal.SIGTERM, signal.SIGKILL]
            if not _ignores_sigint(process.pid):
                signals.insert(0, signal.SIGINT)
            for sig in signals:
                try:
                    if os.name == "posix":
                        os.killpg(process.pid, sig)
                    else:
                        process.terminate()
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return None if process is None else process.poll()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def log_text(self) -> str:
        """The server's whole log so far, without ANSI colours (0.33 colours its log levels); '' when we did not
        start it. A custom node pack that failed to import shows as "(IMPORT FAILED): <its folder>"."""
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())

    def log_tail(self, lines=60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP API ---------------------------------------------------------------------------------

    def request(self, path, data=None, timeout=30.0) -> bytes:
        """GET `path` (or POST `data` as JSON when given); return the body. HTTP errors raise HTTPError."""
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path, timeout=30.0):
        return json.loads(self.request(path, timeout=timeout))

    def system_stats(self) -> dict:
        """GET /system_stats: {"system": {"comfyui_version", "pytorch_version", ...}, "devices": [...]}."""
        return self.get_json("/system_stats", timeout=5.0)

    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (every node class) or /object_info/<class>: {class: {"input", "output", ...}}."""
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def queue_prompt(self, workflow: dict, client_id: str | None = None) -> str:
        """POST an API-format workflow ({node_id: {"class_type", "inputs"}}) to /prompt; return its prompt_id.
        Raises PromptRejected when ComfyUI refuses it (validation errors, unknown node classes)."""
        payload = {"prompt": workflow, "client_id": client_id or uuid.uuid4().hex}
        try:
            answer = json.loads(self.request("/prompt", data=payload))
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            try:
                raise PromptRejected(json.loads(text)) from None
            except json.JSONDecodeError:
                raise PromptRejected({"error": {"message": f"HTTP {err.code}: {text}"}}) from None
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        """GET /history/<prompt_id>: the entry once the prompt has finished (successfully or not), else None."""
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def wait_for(self, prompt_id: str, timeout=300.0, poll=0.2) -> dict:
        """Poll /history until the prompt has finished; return its entry:
        {"prompt": [...], "outputs": {node_id: {"images": [{"filename", "subfolder", "type"}], ...}},
         "status": {"status_str": "success" | "error", "completed": bool, "messages": [[event, data], ...]},
         "meta": {...}}. On a node exception, the "execution_error" message's data holds "node_id",
        "node_type", "exception_type", "exception_message" and "traceback". Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)  # ComfyUI files the entry once the prompt is over
            if entry is not None:
                return entry
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited (code {self.process.returncode}) while running {prompt_id}; "
                                   f"log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f} s")
            time.sleep(poll)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view?filename=..&subfolder=..&type=output|temp|input: the file's bytes (PNG for images)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self.request(f"/view?{query}")

    def interrupt(self) -> None:
        """POST /interrupt: stop the running prompt (nodes see it via
        comfy.model_management.throw_exception_if_processing_interrupted)."""
        self.request("/interrupt", data={})

    def websocket(self, client_id: str, timeout=60.0) -> "WebSocket":
        """Open /ws?clientId=<client_id>; pass the same client_id to queue_prompt to get its messages."""
        return WebSocket(self.url, client_id, timeout)


class WebSocket:
    """Minimal RFC 6455 client for ComfyUI's /ws (no TLS, no extensions). recv() returns a dict for a JSON
    text message ({"type": ..., "data": ...}), bytes for a binary one (previews), None once closed."""

    def __init__(self, url: str, client_id: str, timeout=60.0):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={urllib.parse.quote(client_id)} HTTP/1.1\r\n"
                           f"Host: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head.decode(errors='replace')}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed mid-frame")
            data += chunk
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = struct.pack("!B", 0x80 | opcode)
        head += struct.pack("!B", 0x80 | n) if n < 126 else (
            struct.pack("!BH", 0x80 | 126, n) if n < 65536 else struct.pack("!BQ", 0x80 | 127, n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        """Next message: dict (JSON text), bytes (binary) or None (closed). socket.timeout if none arrives."""
        message, kind = b"", None
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:  # close
                self.close()
                return None
            if opcode == 0x9:  # ping
                self._send(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            kind = kind if opcode == 0x0 else opcode
            message += payload
            if b0 & 0x80:  # final fragment
                return json.loads(message) if kind == 0x1 else message

    def messages_until_done(self, prompt_id: str, timeout=300.0):
        """Yield messages until this prompt's 'execution_success', 'execution_error' or 'execution_interrupted'
        arrives (yielded too), or until ComfyUI's end marker {'type': 'executing', 'data': {'node': None}}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv()
            if msg is None:
                return
            yield msg
            if isinstance(msg, dict) and msg.get("data", {}).get("prompt_id") == prompt_id and (
                    msg["type"] in ("execution_success", "execution_error", "execution_interrupted")
                    or (msg["type"] == "executing" and msg["data"].get("node") is None)):
                return
        raise TimeoutError(f"no end of prompt {prompt_id} on /ws after {timeout:.0f} s")

    def close(self) -> None:
        try:
            self._send(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- running workflows headless ----------------------------------------------------------------------------------


class WorkflowError(RuntimeError):
    """A queued workflow ended with ComfyUI status "error" (a node raised) or was interrupted.

    `.entry` is the /history entry; `.node_id`, `.node_type`, `.exception_type` and `.exception_message` come from
    ComfyUI's "execution_error" message (None when it was interrupted)."""

    def __init__(self, entry: dict):
        self.entry = entry
        data = next((d for kind, d in entry.get("status", {}).get("messages", []) if kind == "execution_error"), {})
        self.node_id, self.node_type = data.get("node_id"), data.get("node_type")
        self.exception_type, self.exception_message = data.get("exception_type"), data.get("exception_message")
        if data:
            text = f"node {self.node_id} ({self.node_type}) raised {self.exception_type}: {self.exception_message}"
        else:
            text = f"workflow did not finish: status {entry.get('status', {}).get('status_str')!r}"
        super().__init__(text.strip())


class WorkflowResult:
    """What a finished workflow produced.

    texts:  {node_id: [str, ...]}, the "text" UI output of nodes such as VideoPure's vote and classify nodes.
    images: [{"node_id", "filename", "subfolder", "type"}, ...], every image an output node saved or previewed;
            fetch one with server.view(filename, subfolder, type).
    entry:  the raw /history entry; seconds: wall time from queueing to the end.
    """

    def __init__(self, prompt_id: str, entry: dict, seconds: float):
        self.prompt_id, self.entry, self.seconds = prompt_id, entry, seconds
        outputs = entry.get("outputs", {})
        self.texts = {node: list(out["text"]) for node, out in outputs.items() if out.get("text")}
        self.images = [
            {"node_id": node, "filename": img["filename"], "subfolder": img.get("subfolder", ""),
             "type": img.get("type", "output")}
            for node, out in outputs.items()
            for img in out.get("images", [])
        ]


def load_workflow(path) -> dict:
    """Read an API-format workflow ({node_id: {"class_type", "inputs"}}) from a JSON file.

    UI-format files (the ones the ComfyUI frontend saves, with "nodes" and "links") are refused with a hint."""
    with open(path, encoding="utf-8") as f:
        workflow = json.load(f)
    if isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and "links" in workflow:
        raise ValueError(
            f"{path} is a UI-format workflow (what the frontend saves). Queue the API-format file instead "
            f"(VideoPure ships them in workflows/api/), or export one from the frontend with Workflow > Export (API)."
        )
    if not isinstance(workflow, dict) or not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
        raise ValueError(f"{path} is not an API-format workflow: expected {{node_id: {{'class_type', 'inputs'}}}}.")
    return workflow


def set_inputs(workflow: dict, assignments) -> dict:
    """A copy of `workflow` with inputs changed: each assignment is "NODE.INPUT=VALUE", VALUE read as JSON when it
    parses (5, 0.5, true, "text") and as a plain string otherwise. Example: "2.index=7" picks clip 7."""
    workflow = json.loads(json.dumps(workflow))
    for text in assignments:
        target, sep, value = text.partition("=")
        node, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. 2.index=7")
        if node not in workflow:
            raise ValueError(f"--set {text!r}: the workflow has no node {node!r} (nodes: {', '.join(workflow)}).")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        workflow[node].setdefault("inputs", {})[name] = parsed
    return workflow


def run_workflow(server: ComfyUIServer, workflow: dict, progress=None, timeout=1800.0) -> WorkflowResult:
    """Queue an API-format workflow, follow it on /ws and return its WorkflowResult once it has finished.

    progress(stage, step, total) is called for every progress message (stage = "<node id> <class_type>"), the
    same callback signature as the library's stages (videopure_core.progress.TqdmCallback fits). Raises
    PromptRejected when ComfyUI refuses the workflow, WorkflowError when a node fails, TimeoutError."""
    start = time.monotonic()
    client_id = uuid.uuid4().hex
    ws = None
    try:
        ws = server.websocket(client_id, timeout=min(30.0, timeout))
    except OSError:
        ws = None  # no websocket: poll /history below
    try:
        prompt_id = server.queue_prompt(workflow, client_id)
        if ws is not None:
            _follow(ws, prompt_id, workflow, progress, start + timeout)
    finally:
        if ws is not None:
            ws.close()
    entry = server.wait_for(prompt_id, timeout=max(1.0, start + timeout - time.monotonic()))
    if entry.get("status", {}).get("status_str") != "success":
        raise WorkflowError(entry)
    return WorkflowResult(prompt_id, entry, time.monotonic() - start)


def _follow(ws: "WebSocket", prompt_id: str, workflow: dict, progress, deadline: float) -> None:
    """Read /ws messages until this prompt ends, passing "progress" messages to `progress`."""
    while time.monotonic() < deadline:
        try:
            msg = ws.recv()
        except socket.timeout:
            continue  # a long node without progress messages; keep listening
        except (OSError, ConnectionError):
            return  # the socket broke: the caller polls /history instead
        if msg is None:
            return
        if not isinstance(msg, dict):
            continue  # binary previews
        data = msg.get("data", {})
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        kind = msg.get("type")
        if kind == "progress" and progress is not None:
            node = str(data.get("node"))
            stage = f"{node} {workflow.get(node, {}).get('class_type', '')}".strip()
            progress(stage, int(data.get("value", 0)), int(data.get("max", 1)))
        if kind in ("execution_success", "execution_error", "execution_interrupted") or (
            kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id
        ):
            return


# -- `videopure comfy-run` ---------------------------------------------------------------------------------------

HELP = "Queue an API-format ComfyUI workflow on a running server, show progress, print texts and save images."


def add_arguments(p) -> None:
    p.add_argument("workflow", help="API-format workflow JSON, e.g. workflows/api/videopure_one_node.json")
    p.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI server URL (default %(default)s)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change an input before queueing, e.g. --set 2.index=7 (repeatable)")
    p.add_argument("--out", default="comfy-outputs", help="folder for the output images (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the workflow (default 1800)")


def run(args) -> int:
    from .progress import TqdmCallback

    server = ComfyUIServer(args.server)
    try:
        server.system_stats()
    except (urllib.error.URLError, OSError) as err:
        print(f"comfy-run: no ComfyUI server answers at {args.server} ({err}); start one, or pass --server URL.")
        return 2
    workflow = set_inputs(load_workflow(args.workflow), args.assignments)
    try:
        with TqdmCallback() as bar:
            result = run_workflow(server, workflow, bar, args.timeout)
    except PromptRejected as err:
        print(f"comfy-run: ComfyUI refused the workflow: {err}")
        for node, info in (err.body.get("node_errors") or {}).items():
            for e in info.get("errors", []):
                print(f"  node {node} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}")
        return 1
    except WorkflowError as err:
        print(f"comfy-run: {err}")
        return 1
    for node, texts in result.texts.items():
        for text in texts:
            print(f"--- node {node} ({workflow.get(node, {}).get('class_type', '?')})\n{text}")
    os.makedirs(args.out, exist_ok=True)
    for img in result.images:
        data = server.view(img["filename"], img["subfolder"], img["type"])
        path = os.path.join(args.out, f"{img['node_id']}_{os.path.basename(img['filename'])}")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    print(f"comfy-run: prompt {result.prompt_id} finished in {result.seconds:.1f} s; "
          f"{len(result.images)} image(s) saved to {args.out}/")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m videopure_core.comfy_client", description=HELP)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
