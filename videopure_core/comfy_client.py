"""Queue workflows on a running ComfyUI server and follow them: the client behind `videopure comfy-run`.

HTTP (standard library) for /prompt, /history, /view, /queue and /interrupt; progress from the /ws websocket
(websocket-client, ws:// for http and wss:// for https servers), and /history polling when the websocket cannot
connect. Works with ComfyUI 0.3.75 and 0.33; never imports ComfyUI::

    from videopure_core.comfy_client import ComfyClient, load_workflow, run_workflow

    client = ComfyClient("http://127.0.0.1:8188")
    result = run_workflow(client, load_workflow("workflows/api/videopure_one_node.json"))
    print(result.texts)                                            # {node_id: [vote table, ...]}
    png = client.view(**{k: result.images[0][k] for k in ("filename", "subfolder", "type")})
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Iterator

from .options import parse_assignments

END_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")


class PromptRejected(RuntimeError):
    """ComfyUI did not accept the whole workflow: POST /prompt answered 400, or answered 200 with `node_errors`
    (ComfyUI then runs only the outputs that validated; ComfyClient.queue_prompt cancels that partial run).

    `.body` is ComfyUI's answer: {"error": {"type", "message", "details", "extra_info"} (400 only), "node_errors":
    {node_id: {"errors": [{"type", "message", "details", "extra_info"}], "class_type", "dependent_outputs"}}}."""

    def __init__(self, body):
        self.body = body if isinstance(body, dict) else {"error": {"message": str(body)}}
        error = self.body.get("error") or {}
        if error:
            text = f"{error.get('message', '')} {error.get('details', '')}".strip()
        else:
            text = (f"{len(self.node_errors)} node(s) failed validation; ComfyUI would run only the outputs that "
                    f"do not depend on them")
        super().__init__(f"prompt rejected: {text}")

    @property
    def node_errors(self) -> dict:
        return self.body.get("node_errors") or {}

    def lines(self) -> list[str]:
        """One line per node error: 'node 6 (VideoPurePurify): Value 0 smaller than min of 1: t_star'."""
        return [f"node {node} ({info.get('class_type')}): {e.get('message')}: {e.get('details')}"
                for node, info in self.node_errors.items() for e in info.get("errors", [])]


class ComfyClient:
    """A ComfyUI server at `url` (http:// or https://, optionally with a path prefix behind a proxy).

    `ssl_context` verifies https/wss servers (default: the system's certificates). Proxy variables in the
    environment are ignored, as a server on 127.0.0.1 needs."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None):
        self.url = url.rstrip("/")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"ComfyUI server URL {url!r}: expected http://host:port or https://host")
        self.ssl_context = ssl_context
        handlers = [urllib.request.ProxyHandler({})]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, path: str, data=None, timeout=30.0) -> bytes:
        """GET `path` (or POST `data` as JSON when given); return the body. HTTP errors raise HTTPError."""
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        with self._opener.open(req, timeout=timeout) as resp:
            return resp.read()

    def get_json(self, path: str, timeout=30.0):
        return json.loads(self.request(path, timeout=timeout))

    def system_stats(self) -> dict:
        """GET /system_stats: {"system": {"comfyui_version", "pytorch_version", ...}, "devices": [...]}."""
        return self.get_json("/system_stats", timeout=5.0)

    def queue_prompt(self, workflow: dict, client_id: str | None = None) -> str:
        """POST an API-format workflow ({node_id: {"class_type", "inputs"}}) to /prompt; return its prompt_id.

        Raises PromptRejected when ComfyUI refuses it (400: nothing validated) or accepts only part of it (200 with
        node_errors: that partial run is cancelled first)."""
        payload = {"prompt": workflow, "client_id": client_id or uuid.uuid4().hex}
        try:
            answer = json.loads(self.request("/prompt", data=payload))
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError:
                body = {"error": {"message": f"HTTP {err.code}: {text}"}}
            raise PromptRejected(body) from None
        if answer.get("node_errors"):
            with contextlib.suppress(OSError):
                self.cancel(answer["prompt_id"])
            raise PromptRejected(answer)
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
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout:.0f} s")
            time.sleep(poll)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view?filename=..&subfolder=..&type=output|temp|input: the file's bytes (PNG for images)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        return self.request(f"/view?{query}")

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt {"prompt_id": ...}: stop that prompt if it is the one running (nodes see it via
        comfy.model_management.throw_exception_if_processing_interrupted). Without a prompt_id, or on a server
        that predates per-prompt interrupts and ignores the body, whatever is running stops."""
        self.request("/interrupt", data={"prompt_id": prompt_id} if prompt_id else {})

    def cancel(self, prompt_id: str) -> None:
        """Take a prompt off the queue (POST /queue {"delete": [...]}), or interrupt it if it is running. /queue is
        read first, so a server that reads every interrupt as global never loses another client's prompt."""
        self.request("/queue", data={"delete": [prompt_id]})
        running = self.get_json("/queue").get("queue_running", [])
        if any(len(item) > 1 and item[1] == prompt_id for item in running):
            self.interrupt(prompt_id)

    def websocket(self, client_id: str, timeout=60.0):
        """A websocket-client connection to /ws?clientId=<client_id>; pass the same client_id to queue_prompt to get
        the prompt's messages (read them with prompt_messages). `timeout` applies to every receive.
        Raises OSError when it cannot connect (ConnectionError for a refused handshake, ssl.SSLError for a
        certificate it does not trust), ImportError without websocket-client."""
        import websocket

        url, host = websocket_target(self.url, client_id)
        sslopt = {"context": self.ssl_context} if self.ssl_context is not None else None
        try:
            return websocket.create_connection(url, timeout=timeout, host=host, sslopt=sslopt, http_no_proxy=["*"])
        except websocket.WebSocketException as err:
            raise ConnectionError(f"websocket {url}: {err}") from err


def websocket_target(url: str, client_id: str) -> tuple[str, str]:
    """(websocket URL, Host header) for a server URL: 'https://h/comfy' -> ('wss://h/comfy/ws?clientId=..', 'h').

    The Host header is the URL's host[:port] as written, what the HTTP requests send (no default port added)."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    host = parts.netloc.rpartition("@")[2]
    query = urllib.parse.urlencode({"clientId": client_id})
    return urllib.parse.urlunsplit((scheme, host, parts.path.rstrip("/") + "/ws", query, "")), host


def prompt_messages(ws, prompt_id: str, deadline: float) -> Iterator[dict]:
    """The JSON messages on `ws` (a ComfyClient.websocket) for prompt `prompt_id` and for no prompt (status), up
    to and including the one that ends it: its "execution_success", "execution_error", "execution_interrupted", or
    "executing" with node None. Binary messages (previews) and other prompts' messages are skipped. Ends early when
    the socket closes or breaks (read /history then); TimeoutError after `deadline` (a time.monotonic() value)."""
    import websocket

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"prompt {prompt_id} not finished by the deadline")
        ws.settimeout(min(remaining, 30.0))
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue  # a long node without progress messages; keep listening
        except (websocket.WebSocketException, OSError):
            return
        if isinstance(raw, bytes):
            continue
        if not raw:  # a close frame
            return
        msg = json.loads(raw)
        data = msg.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        yield msg
        kind = msg.get("type")
        if data.get("prompt_id") == prompt_id and (
                kind in END_MESSAGES or (kind == "executing" and data.get("node") is None)):
            return


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
            fetch one with client.view(filename, subfolder, type).
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
    """A copy of `workflow` with inputs changed: each assignment is "NODE.INPUT=VALUE", VALUE read by
    videopure_core.options.parse_value (7, 0.5, true, "quoted text", [JSON list]). `none` and AxBxC tuples, which
    ComfyUI inputs have no use for, are passed as the text "none" / "AxBxC". Example: "2.index=7" picks clip 7."""
    workflow = copy.deepcopy(workflow)
    for target, value in parse_assignments(assignments, "--set", "2.index=7").items():
        node, dot, name = target.partition(".")
        if not dot or not name:
            raise ValueError(f"--set {target}=...: expected NODE.INPUT=VALUE, e.g. 2.index=7")
        if node not in workflow:
            raise ValueError(f"--set {target}=...: the workflow has no node {node!r} (nodes: {', '.join(workflow)}).")
        if value is None:
            value = "none"
        elif isinstance(value, tuple):
            value = "x".join(map(str, value))
        workflow[node].setdefault("inputs", {})[name] = value
    return workflow


def run_workflow(client: ComfyClient, workflow: dict, progress=None, timeout=1800.0) -> WorkflowResult:
    """Queue an API-format workflow, follow it on /ws (or poll /history) and return its WorkflowResult.

    progress(stage, step, total) is called for every progress message (stage = "<node id> <class_type>"), the
    same callback signature as the library's stages (videopure_core.progress.TqdmCallback fits). Raises
    PromptRejected when ComfyUI refuses the workflow, WorkflowError when a node fails, TimeoutError; on a timeout
    or Ctrl-C the prompt is cancelled on the server (only this prompt) before the exception goes on."""
    start = time.monotonic()
    deadline = start + timeout
    client_id = uuid.uuid4().hex
    try:
        ws = client.websocket(client_id, timeout=min(30.0, timeout))
    except (OSError, ImportError):
        ws = None  # no websocket: poll /history below
    prompt_id = None
    try:
        prompt_id = client.queue_prompt(workflow, client_id)
        for msg in prompt_messages(ws, prompt_id, deadline) if ws is not None else ():
            data = msg.get("data") or {}
            if msg.get("type") == "progress" and progress is not None:
                node = str(data.get("node"))
                stage = f"{node} {workflow.get(node, {}).get('class_type', '')}".strip()
                progress(stage, int(data.get("value", 0)), int(data.get("max", 1)))
        entry = client.wait_for(prompt_id, timeout=max(1.0, deadline - time.monotonic()))
    except (KeyboardInterrupt, TimeoutError):
        if prompt_id is not None:
            with contextlib.suppress(OSError):
                client.cancel(prompt_id)
        raise
    finally:
        if ws is not None:
            ws.close(timeout=2.0)
    if entry.get("status", {}).get("status_str") != "success":
        raise WorkflowError(entry)
    return WorkflowResult(prompt_id, entry, time.monotonic() - start)


# -- `videopure comfy-run` ---------------------------------------------------------------------------------------

HELP = "Queue an API-format ComfyUI workflow on a running server, show progress, print texts and save images."


def add_arguments(p) -> None:
    p.add_argument("workflow", help="API-format workflow JSON, e.g. workflows/api/videopure_one_node.json")
    p.add_argument("--server", default="http://127.0.0.1:8188",
                   help="ComfyUI server URL, http:// or https:// (default %(default)s)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="change an input before queueing, e.g. --set 2.index=7 (repeatable)")
    p.add_argument("--out", default="comfy-outputs", help="folder for the output images (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for the workflow (default 1800)")


def run(args) -> int:
    from .io import atomic_write
    from .progress import TqdmCallback

    client = ComfyClient(args.server)
    try:
        client.system_stats()
    except (urllib.error.URLError, OSError) as err:
        print(f"comfy-run: no ComfyUI server answers at {args.server} ({err}); start one, or pass --server URL.")
        return 2
    try:
        workflow = set_inputs(load_workflow(args.workflow), args.assignments)
    except ValueError as err:
        print(f"comfy-run: {err}")
        return 2
    try:
        with TqdmCallback() as bar:
            result = run_workflow(client, workflow, bar, args.timeout)
    except PromptRejected as err:
        print(f"comfy-run: ComfyUI refused the workflow: {err}")
        for line in err.lines():
            print(f"  {line}")
        return 1
    except (WorkflowError, TimeoutError) as err:
        print(f"comfy-run: {err}")
        return 1
    except KeyboardInterrupt:
        print("comfy-run: interrupted (a queued prompt is cancelled on the server).")
        return 130
    for node, texts in result.texts.items():
        for text in texts:
            print(f"--- node {node} ({workflow.get(node, {}).get('class_type', '?')})\n{text}")
    os.makedirs(args.out, exist_ok=True)
    for img in result.images:
        data = client.view(img["filename"], img["subfolder"], img["type"])
        with atomic_write(os.path.join(args.out, f"{img['node_id']}_{os.path.basename(img['filename'])}"), "wb") as f:
            f.write(data)
    print(f"comfy-run: prompt {result.prompt_id} finished in {result.seconds:.1f} s; "
          f"{len(result.images)} image(s) saved to {args.out}/")
    return 0


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m videopure_core.comfy_client", description=HELP)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
