"""ComfyUI workflow files without ComfyUI: build UI-format graphs, convert them to the API format, check both.

Two formats describe the same graph:
- UI format (what the frontend saves and loads, version 0.4): "nodes" with id, type, pos, size, inputs (sockets,
  each with the id of the link feeding it), outputs (with the ids of their links) and `widgets_values`, the
  widget values **by position**; and "links" as [id, from_node, from_slot, to_node, to_slot, type].
- API format (what POST /prompt takes): {node_id: {"class_type", "inputs": {name: value or [node_id, slot]}}}.

Node definitions come as ComfyUI's /object_info answer: {class: {"input": {"required": {name: spec}, "optional":
...}, "input_order": ..., "output": [types], "output_name": [...], "output_node": bool, ...}} with spec
`[type_or_options, {options}]`. Widgets are the inputs whose type is a value type (INT, FLOAT, STRING, BOOLEAN)
or a list of options (a combo), in definition order, required before optional; an INT named seed / noise_seed, or
with control_after_generate, stores one more value after its own (the frontend's "fixed"/"randomize" control).
`node_info` makes such definitions from node classes (as ComfyUI's server does), so everything here also works
on a pack's classes alone.

This module never imports ComfyUI.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Iterable

VALUE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
VIRTUAL_NODES = ("Note", "MarkdownNote")  # frontend-only nodes: no class on the server, never in the API format

# The core nodes VideoPure's bundled workflows use, as ComfyUI 0.3.75 and 0.33 define them (inputs that matter).
CORE_NODES: dict[str, dict] = {
    "PreviewImage": {"input": {"required": {"images": ["IMAGE", {}]}}, "input_order": {"required": ["images"]},
                     "output": [], "output_name": [], "output_node": True, "display_name": "Preview Image"},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}],
                                         "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": [],
                  "output_node": True, "display_name": "Save Image"},
    "PreviewAny": {"input": {"required": {"source": ["*", {}]}}, "input_order": {"required": ["source"]},
                   "output": [], "output_name": [], "output_node": True, "display_name": "Preview as Text"},
}


def node_info(name: str, cls, display_name: str | None = None) -> dict:
    """The /object_info entry ComfyUI serves for a (V1-style) node class."""
    inputs = cls.INPUT_TYPES()
    outputs = list(cls.RETURN_TYPES)
    info = {
        "input": inputs,
        "input_order": {kind: list(specs) for kind, specs in inputs.items()},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or outputs),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    return json.loads(json.dumps(info))


def object_info_of(mappings: dict, display_names: dict | None = None, core: bool = True) -> dict:
    """/object_info for node classes {name: class} (plus CORE_NODES unless core=False)."""
    info = {name: node_info(name, cls, (display_names or {}).get(name)) for name, cls in mappings.items()}
    if core:
        info.update({k: {**v, "name": k} for k, v in CORE_NODES.items() if k not in info})
    return info


# --- input specs ---------------------------------------------------------------------------------------------


def ordered_inputs(info: dict) -> list[tuple[str, str, list]]:
    """(name, "required" | "optional", spec) of a node's inputs in definition order (hidden ones left out)."""
    out = []
    for kind in ("required", "optional"):
        specs = info.get("input", {}).get(kind, {}) or {}
        order = info.get("input_order", {}).get(kind) or list(specs)
        out += [(name, kind, specs[name]) for name in order if name in specs]
    return out


def _options(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def input_type(spec) -> str:
    """The socket type of an input: its type name, or "COMBO" for a list of options."""
    kind = spec[0] if isinstance(spec, (list, tuple)) else spec
    return "COMBO" if isinstance(kind, list) else str(kind)


def combo_options(spec) -> list | None:
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return _options(spec).get("options")
    return None


def is_widget(spec) -> bool:
    t = input_type(spec)
    return (t in VALUE_TYPES or t == "COMBO") and not _options(spec).get("forceInput")


def has_control_value(name: str, spec) -> bool:
    """Whether the frontend stores a "fixed"/"randomize" control value right after this widget's value."""
    if input_type(spec) != "INT":
        return False
    return name in ("seed", "noise_seed") or bool(_options(spec).get("control_after_generate"))


def default_value(spec) -> Any:
    opts = _options(spec)
    if "default" in opts:
        return opts["default"]
    choices = combo_options(spec)
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(input_type(spec))


def value_problem(name: str, spec, value) -> str | None:
    """Why `value` does not fit the widget spec, or None."""
    t = input_type(spec)
    opts = _options(spec)
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


# --- UI format -> API format ---------------------------------------------------------------------------------


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API format, as the frontend's "Export (API)" does for plain graphs.

    Supports the features VideoPure's workflows use: normal and muted (mode 2, left out) nodes, Note nodes,
    links into sockets and into widgets turned into sockets. Raises ValueError on anything else (bypassed nodes,
    reroutes, primitive nodes, subgraphs) so that nothing is converted wrongly."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui.get("links", [])}
    api = {}
    for node in sorted(ui["nodes"], key=lambda n: n.get("order", 0)):
        kind = node["type"]
        if kind in VIRTUAL_NODES or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({kind}) has mode {node['mode']}; only normal and muted nodes convert")
        if kind not in object_info:
            raise ValueError(f"node {node['id']} has type {kind!r}, which the server does not know")
        info = object_info[kind]
        linked = {i["name"]: i.get("link") for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        if not isinstance(node.get("widgets_values", []), list):
            raise ValueError(f"node {node['id']} ({kind}) stores widgets_values as a dict; not supported here")
        inputs, position = {}, 0
        for name, _, spec in ordered_inputs(info):
            if is_widget(spec):
                if position >= len(values):
                    raise ValueError(f"node {node['id']} ({kind}) has {len(values)} widget values; "
                                     f"{name!r} has none")
                value = values[position]
                position += 2 if has_control_value(name, spec) else 1
                if name not in linked:
                    inputs[name] = value
                    continue
            if name in linked:
                link = links[linked[name]]
                source = nodes[link[1]]
                if source["type"] not in object_info or source.get("mode", 0) != 0:
                    raise ValueError(f"node {node['id']} input {name!r} comes from node {link[1]} "
                                     f"({source['type']}); only links from normal nodes convert")
                inputs[name] = [str(link[1]), link[2]]
        api[str(node["id"])] = {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or info.get("display_name") or kind},
        }
    return api


# --- checks ---------------------------------------------------------------------------------------------------


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
            elif not is_widget(spec):
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
        widgets = [(n, s) for n, _, s in specs if is_widget(s)]
        expected = sum(2 if has_control_value(n, s) else 1 for n, s in widgets)
        values = node.get("widgets_values") or []
        if len(values) != expected:
            problems.append(f"node {node['id']} ({kind}): {len(values)} widget values, expected {expected} "
                            f"({', '.join(n for n, _ in widgets)})")
        position = 0
        for name, spec in widgets:
            if position < len(values):
                problem = value_problem(name, spec, values[position])
                if problem:
                    problems.append(f"node {node['id']} ({kind}): widget {position}: {problem}")
            position += 2 if has_control_value(name, spec) else 1
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


# --- authoring UI-format graphs -------------------------------------------------------------------------------


class UIGraph:
    """Build a UI-format workflow from node definitions; `ui()` lays it out in columns by depth.

        g = UIGraph(object_info)
        clip = g.add("VideoPureWorldClip", index=3)
        prev = g.add("PreviewImage")
        g.connect(clip, "images", prev, "images")
        json.dump(g.ui(), open("workflow.json", "w"))
    """

    def __init__(self, object_info: dict):
        self.info = object_info
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self._placed: dict[int, tuple[float, float]] = {}

    def add(self, kind: str, title: str | None = None, pos: tuple[float, float] | None = None,
            size: tuple[float, float] | None = None, **widgets) -> int:
        """Add a node of class `kind`; keyword arguments set widget values (the rest keep their defaults)."""
        info = self.info[kind]
        specs = ordered_inputs(info)
        unknown = set(widgets) - {n for n, _, s in specs if is_widget(s)}
        if unknown:
            raise ValueError(f"{kind} has no widgets {sorted(unknown)}")
        values = []
        for name, _, spec in specs:
            if is_widget(spec):
                values.append(widgets.get(name, default_value(spec)))
                if has_control_value(name, spec):
                    values.append("fixed")
        node_id = len(self.nodes) + 1
        inputs = [{"name": n, "type": input_type(s), "link": None} for n, _, s in specs if not is_widget(s)]
        outputs = [{"name": name, "type": t, "links": [], "slot_index": i}
                   for i, (t, name) in enumerate(zip(info["output"], info.get("output_name") or info["output"]))]
        size = size or self._size(kind, inputs, outputs, values)
        node = {"id": node_id, "type": kind, "pos": [0, 0], "size": list(size),
                "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": kind}, "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        if pos is not None:
            self._placed[node_id] = pos
        return node_id

    def place(self, node_id: int, pos: tuple[float, float]) -> None:
        """Fix a node's position (nodes never placed are laid out in columns by depth)."""
        self._placed[node_id] = pos

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 220)) -> int:
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": "Note", "pos": list(pos), "size": list(size), "flags": {},
                           "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
        self._placed[node_id] = pos
        return node_id

    def connect(self, src: int, output: str, dst: int, input_name: str) -> int:
        """Link output `output` of node src to input `input_name` of node dst (a widget becomes a socket)."""
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        slot = next(i for i, o in enumerate(s["outputs"]) if o["name"] == output)
        kind = s["outputs"][slot]["type"]
        link_id = len(self.links) + 1
        target = next((i for i, x in enumerate(d["inputs"]) if x["name"] == input_name), None)
        if target is None:  # a widget turned into a socket
            spec = dict((n, sp) for n, _, sp in ordered_inputs(self.info[d["type"]]))[input_name]
            d["inputs"].append({"name": input_name, "type": input_type(spec), "link": None,
                                "widget": {"name": input_name}})
            target = len(d["inputs"]) - 1
        d["inputs"][target]["link"] = link_id
        s["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src, slot, dst, target, kind])
        return link_id

    def group(self, title: str, node_ids: Iterable[int], color: str = "#3f789e") -> None:
        self.groups.append({"title": title, "nodes": list(node_ids), "color": color})

    @staticmethod
    def _size(kind, inputs, outputs, values) -> tuple[int, int]:
        if kind in ("PreviewImage", "SaveImage"):
            return (320, 360)
        if kind == "PreviewAny":
            return (420, 300)
        rows = max(len(inputs), len(outputs))
        return (340, 46 + 22 * rows + 26 * len(values))

    def ui(self) -> dict:
        depth = self._depths()
        order = sorted(range(1, len(self.nodes) + 1), key=lambda i: (depth[i], i))
        for rank, node_id in enumerate(order):
            self.nodes[node_id - 1]["order"] = rank
        columns: dict[int, float] = {}
        for node_id in order:
            node = self.nodes[node_id - 1]
            if node_id in self._placed:
                node["pos"] = list(self._placed[node_id])
                continue
            col = depth[node_id]
            y = columns.get(col, 60.0)
            node["pos"] = [40 + 400 * col, y]
            columns[col] = y + node["size"][1] + 50
        groups = []
        for g in self.groups:
            members = [self.nodes[i - 1] for i in g["nodes"]]
            x0 = min(n["pos"][0] for n in members) - 20
            y0 = min(n["pos"][1] for n in members) - 90
            x1 = max(n["pos"][0] + n["size"][0] for n in members) + 20
            y1 = max(n["pos"][1] + n["size"][1] for n in members) + 20
            groups.append({"title": g["title"], "bounding": [x0, y0, x1 - x0, y1 - y0], "color": g["color"],
                           "font_size": 24, "flags": {}})
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [0, 0]}},
            "version": 0.4,
        }

    def _depths(self) -> dict[int, int]:
        sources = {n["id"]: [] for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            sources[dst].append(src)
        depth: dict[int, int] = {}

        def visit(i):
            if i not in depth:
                depth[i] = 1 + max((visit(s) for s in sources[i]), default=-1)
            return depth[i]

        for n in self.nodes:
            visit(n["id"])
        return depth
