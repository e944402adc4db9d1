"""ComfyUI test tooling: a ComfyUI server of our own (start, wait, stop, its log) and checks of workflow files
against node definitions (what ComfyUI's /prompt validation would say, without ComfyUI).

    with ComfyUIServer.start("ComfyUI", python="venv/bin/python", log_path="comfy.log") as server:
        result = run_workflow(server, load_workflow("workflows/api/videopure_one_node.json"))
    check_api(api_workflow, object_info), check_ui(ui_workflow, object_info)  # -> list of problems

ComfyUIServer is videopure_core.comfy_client's ComfyClient plus the subprocess that runs the server. Used by
tests/comfyui (a real ComfyUI 0.3.75) and tests/test_nodes_workflows.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import uuid
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # workflows.graph

from videopure_core.comfy_client import ComfyClient  # noqa: E402
from workflows.graph import (  # noqa: E402
    VIRTUAL_NODES, combo_options, input_options, input_type, is_dynamic_combo, is_widget, ordered_inputs,
    stored_widgets,
)


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


class ComfyUIServer(ComfyClient):
    """A ComfyUI server at `url`, optionally owning the subprocess that runs it (`ComfyUIServer.start`)."""

    def __init__(self, url: str, process: subprocess.Popen | None = None, log_path: str | None = None):
        super().__init__(url)
        self.process = process
        self.log_path = log_path
        self._log_file = None

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

    def object_info(self, node_class: str | None = None) -> dict:
        """GET /object_info (every node class) or /object_info/<class>: {class: {"input", "output", ...}}."""
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else ""))

    def history(self, prompt_id: str) -> dict | None:
        """ComfyClient.history, with the log's tail when the server we started has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited (code {self.process.returncode}) while running {prompt_id}; "
                               f"log:\n{self.log_tail()}")
        return super().history(prompt_id)


# --- checks of workflow files -------------------------------------------------------------------------------------


def value_problem(name: str, spec, value) -> str | None:
    """Why `value` does not fit the widget spec, or None."""
    t = input_type(spec)
    opts = input_options(spec)
    if is_dynamic_combo(spec):
        keys = [o.get("key") for o in opts.get("options", [])]
        return None if value in keys else f"{name}={value!r} is not one of {keys}"
    if t == "COMBO":
        choices = combo_options(spec) or []
        return None if value in choices else f"{name}={value!r} is not one of {choices}"
    if t == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if t == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    if t in ("INT", "FLOAT"):
        ok = isinstance(value, int) if t == "INT" else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            return f"{name}={value!r} is not {'an integer' if t == 'INT' else 'a number'}"
        if "min" in opts and value < opts["min"]:
            return f"{name}={value!r} is below its minimum {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{name}={value!r} is above its maximum {opts['max']}"
    return None


def types_match(output_type: str, input_type_: str) -> bool:
    """ComfyUI's rule, simplified: equal, or either side is "*", or the input lists the output among "A,B"."""
    if "*" in (output_type, input_type_) or output_type == input_type_:
        return True
    return output_type in input_type_.split(",") or input_type_ in output_type.split(",")


def check_api(api: dict, object_info: dict) -> list[str]:
    """Problems of an API-format workflow against node definitions ([] when it would pass ComfyUI's checks)."""
    problems = []
    for node_id, node in api.items():
        kind = node.get("class_type")
        if kind not in object_info:
            problems.append(f"node {node_id}: unknown class_type {kind!r}")
            continue
        specs = {name: (req, spec) for name, req, spec in ordered_inputs(object_info[kind])}
        for name in node.get("inputs", {}):
            if name not in specs:
                problems.append(f"node {node_id} ({kind}): unknown input {name!r}")
        for name, (req, spec) in specs.items():
            value = node.get("inputs", {}).get(name)
            if value is None:
                if req == "required":
                    problems.append(f"node {node_id} ({kind}): required input {name!r} is missing")
                continue
            if isinstance(value, list):
                if len(value) != 2 or str(value[0]) not in api:
                    problems.append(f"node {node_id} ({kind}): input {name!r} links to missing node {value}")
                    continue
                source = api[str(value[0])]["class_type"]
                outputs = object_info.get(source, {}).get("output", [])
                if not isinstance(value[1], int) or not 0 <= value[1] < len(outputs):
                    problems.append(f"node {node_id} ({kind}): input {name!r} uses output {value[1]} of {source}")
                elif not types_match(outputs[value[1]], input_type(spec)):
                    problems.append(f"node {node_id} ({kind}): input {name!r} ({input_type(spec)}) gets "
                                    f"{outputs[value[1]]} from node {value[0]} ({source})")
            elif not is_widget(spec) and not input_options(spec).get("hidden"):  # hidden: a value the UI hides
                problems.append(f"node {node_id} ({kind}): input {name!r} ({input_type(spec)}) needs a link")
            else:
                problem = value_problem(name, spec, value)
                if problem:
                    problems.append(f"node {node_id} ({kind}): {problem}")
    if not any(object_info.get(n.get("class_type"), {}).get("output_node") for n in api.values()):
        problems.append("no output node: ComfyUI would run nothing")
    edges = {k: [str(v[0]) for v in n.get("inputs", {}).values() if isinstance(v, list)] for k, n in api.items()}
    if _has_cycle(edges):
        problems.append("the graph has a cycle")
    return problems


def check_ui(ui: dict, object_info: dict) -> list[str]:
    """Problems of a UI-format workflow: unknown node types, widget values that do not fit their widgets by
    position, links whose types or slots disagree with the node definitions."""
    problems = []
    if ui.get("version") != 0.4:
        problems.append(f"version {ui.get('version')!r}; these files use 0.4")
    nodes = {n["id"]: n for n in ui.get("nodes", [])}
    for node in nodes.values():
        kind = node["type"]
        if kind in VIRTUAL_NODES:
            continue
        if kind not in object_info:
            problems.append(f"node {node['id']}: unknown type {kind!r}")
            continue
        info = object_info[kind]
        specs = ordered_inputs(info)
        values = node.get("widgets_values") or []
        widgets = stored_widgets(info, values)
        expected = _stored_count(widgets)
        # a saved workflow may lack trailing optional widgets added later: the frontend gives them their defaults
        missing_optional = len(values) < expected and all(optional for *_, position, optional in widgets
                                                          if position >= len(values))
        if len(values) != expected and not missing_optional:
            problems.append(f"node {node['id']} ({kind}): {len(values)} widget values, expected {expected} "
                            f"({', '.join(n for n, *_ in widgets)})")
        for name, spec, position, _ in widgets:
            if position < len(values):
                problem = value_problem(name, spec, values[position])
                if problem:
                    problems.append(f"node {node['id']} ({kind}): widget {position}: {problem}")
        by_name = {n: s for n, _, s in specs}
        for slot in node.get("inputs", []):
            if slot["name"] not in by_name:
                problems.append(f"node {node['id']} ({kind}): unknown input socket {slot['name']!r}")
            elif not types_match(slot["type"], input_type(by_name[slot["name"]])) and not (
                    slot.get("widget") and input_type(by_name[slot["name"]]) == "COMBO"):
                problems.append(f"node {node['id']} ({kind}): socket {slot['name']!r} has type {slot['type']}, "
                                f"the node says {input_type(by_name[slot['name']])}")
        for name, req, spec in specs:
            if req == "required" and not is_widget(spec):
                slot = next((s for s in node.get("inputs", []) if s["name"] == name), None)
                if slot is None or slot.get("link") is None:
                    problems.append(f"node {node['id']} ({kind}): required input {name!r} is not connected")
        outs = info.get("output", [])
        for i, slot in enumerate(node.get("outputs", [])):
            if i >= len(outs) or slot["type"] != outs[i]:
                problems.append(f"node {node['id']} ({kind}): output {i} {slot.get('name')!r} has type "
                                f"{slot['type']}, the node says {outs[i] if i < len(outs) else 'nothing'}")
    for link in ui.get("links", []):
        link_id, src, src_slot, dst, dst_slot, kind = link
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: joins missing nodes {src} -> {dst}")
            continue
        outputs, inputs = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
            problems.append(f"link {link_id}: output {src_slot} of node {src} does not list it")
        elif not types_match(outputs[src_slot]["type"], kind):
            problems.append(f"link {link_id}: type {kind} but output {src_slot} of node {src} is "
                            f"{outputs[src_slot]['type']}")
        if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
            problems.append(f"link {link_id}: input {dst_slot} of node {dst} does not hold it")
        elif not types_match(kind, inputs[dst_slot]["type"]):
            problems.append(f"link {link_id}: type {kind} into input {inputs[dst_slot]['name']!r} of node {dst} "
                            f"({inputs[dst_slot]['type']})")
    return problems


def _stored_count(widgets) -> int:
    """How many values `widgets` (from stored_widgets) take: each one's value and what the frontend stores after it."""
    from workflows.graph import extra_values

    return sum(1 + len(extra_values(name, spec)) for name, spec, _, _ in widgets)


def _has_cycle(edges: dict[str, list[str]]) -> bool:
    indegree = {k: 0 for k in edges}
    for k, sources in edges.items():
        for s in sources:
            if s in indegree:
                indegree[k] += 1
    queue = deque(k for k, d in indegree.items() if d == 0)
    seen = 0
    users: dict[str, list[str]] = {k: [] for k in edges}
    for k, sources in edges.items():
        for s in sources:
            if s in users:
                users[s].append(k)
    while queue:
        k = queue.popleft()
        seen += 1
        for u in users[k]:
            indegree[u] -= 1
            if indegree[u] == 0:
                queue.append(u)
    return seen != len(edges)




# --- measuring a running server -----------------------------------------------------------------------------------


def interrupt_latency(client: ComfyClient, workflow: dict, node_id: str, wait: float = 1.0,
                      timeout: float = 900.0) -> tuple[float, str | None, float]:
    """Queue `workflow`, let node `node_id` run for `wait` seconds, POST /interrupt for the prompt, and return
    (seconds from the interrupt to ComfyUI's "execution_interrupted" message, the node it names, seconds the node ran).
    The node named is None when the prompt ended some other way."""
    from videopure_core.comfy_client import prompt_messages

    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    try:
        prompt_id = client.queue_prompt(workflow, client_id)
        started = sent = None
        for msg in prompt_messages(ws, prompt_id, time.monotonic() + timeout):
            data = msg.get("data") or {}
            if msg["type"] == "executing" and data.get("node") == node_id and sent is None:
                started = time.monotonic()
                time.sleep(wait)
                sent = time.monotonic()
                client.interrupt(prompt_id)
            elif msg["type"] == "execution_interrupted" and sent is not None:
                now = time.monotonic()
                return now - sent, data.get("node_id"), now - started
        return float("inf"), None, 0.0
    finally:
        ws.close()


PREVIEW_EVENTS = (1, 2, 4)  # ComfyUI's binary websocket events: PREVIEW_IMAGE, UNENCODED_PREVIEW_IMAGE, ..._WITH_METADATA


def run_with_previews(client: ComfyClient, workflow: dict, timeout: float = 900.0) -> tuple[list[dict], list[bytes]]:
    """Run `workflow` and return (its JSON websocket messages, the JPEG/PNG bytes of every preview image it sent)."""
    client_id = uuid.uuid4().hex
    ws = client.websocket(client_id)
    messages, images = [], []
    try:
        prompt_id = client.queue_prompt(workflow, client_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = ws.recv()
            if isinstance(raw, bytes):
                if int.from_bytes(raw[:4], "big") in PREVIEW_EVENTS:
                    start = max(raw.find(b"\xff\xd8\xff"), 0) if b"\xff\xd8\xff" in raw else raw.find(b"\x89PNG")
                    images.append(raw[start:])
                continue
            msg = json.loads(raw)
            data = msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(msg)
            if data.get("prompt_id") == prompt_id and msg["type"] in ("execution_success", "execution_error",
                                                                          "execution_interrupted"):
                break
    finally:
        ws.close()
    return messages, images
