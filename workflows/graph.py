"""ComfyUI workflow files without ComfyUI: build UI-format graphs and convert them to the API format.

The tooling behind workflows/build.py (and the workflow checks in tests/comfy_tools.py). Two formats describe the
same graph:
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
"""

from __future__ import annotations

import json
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


def input_options(spec) -> dict:
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
        return input_options(spec).get("options")
    return None


def is_widget(spec) -> bool:
    t = input_type(spec)
    return (t in VALUE_TYPES or t == "COMBO") and not input_options(spec).get("forceInput")


def has_control_value(name: str, spec) -> bool:
    """Whether the frontend stores a "fixed"/"randomize" control value right after this widget's value."""
    if input_type(spec) != "INT":
        return False
    return name in ("seed", "noise_seed") or bool(input_options(spec).get("control_after_generate"))


def default_value(spec) -> Any:
    opts = input_options(spec)
    if "default" in opts:
        return opts["default"]
    choices = combo_options(spec)
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(input_type(spec))


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
