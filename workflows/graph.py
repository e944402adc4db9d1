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

# How the frontend (LiteGraph, 1.32 and 1.49 alike) sizes a node: a title bar above `pos`, then one row per socket
# (inputs and outputs side by side), then one row per widget.
TITLE_HEIGHT, SLOT_HEIGHT, WIDGET_HEIGHT, NODE_PADDING = 30, 20, 24, 14

# Where a saved view may put the graph, in screen pixels of a 1920x1080 window: clear of the frontend's left
# sidebar (60 px), its top bars (up to 135 px in 1.32 with the banner and breadcrumb; 95 px in 1.49) and, for the
# wide view, of the minimap and canvas controls in the bottom right corner (from x 1650, y 810).
SCREEN = (1920, 1080)
SAFE_VIEWS = ((80, 140, 1890, 800), (80, 140, 1640, 1060))  # (left, top, right, bottom): wide-short, narrow-tall
MAX_VIEW_SCALE = 1.0

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
    # video files (comfy_extras/nodes_video.py); LoadVideo lists ComfyUI's input folder, where the pack puts its
    # sample clip
    "LoadVideo": {"input": {"required": {"file": ["COMBO", {"options": ["videopure_world_clip.mp4"],
                                                            "video_upload": True}]}},
                  "input_order": {"required": ["file"]}, "output": ["VIDEO"], "output_name": ["VIDEO"],
                  "output_node": False, "display_name": "Load Video"},
    "GetVideoComponents": {"input": {"required": {"video": ["VIDEO", {}]}}, "input_order": {"required": ["video"]},
                           "output": ["IMAGE", "AUDIO", "FLOAT"], "output_name": ["images", "audio", "fps"],
                           "output_node": False, "display_name": "Get Video Components"},
    "CreateVideo": {"input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0, "min": 1.0,
                                                                                     "max": 120.0}]},
                              "optional": {"audio": ["AUDIO", {}]}},
                    "input_order": {"required": ["images", "fps"], "optional": ["audio"]}, "output": ["VIDEO"],
                    "output_name": ["VIDEO"], "output_node": False, "display_name": "Create Video"},
    "SaveVideo": {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default":
                                                                                                "video/ComfyUI"}],
                                         "format": ["COMBO", {"options": ["auto", "mp4"], "default": "auto"}],
                                         "codec": ["COMBO", {"options": ["auto", "h264"], "default": "auto"}]}},
                  "input_order": {"required": ["video", "filename_prefix", "format", "codec"]}, "output": [],
                  "output_name": [], "output_node": True, "display_name": "Save Video"},
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


def is_dynamic_combo(spec) -> bool:
    """A V3 DynamicCombo (ComfyUI 0.33, e.g. Save Video's format): a combo whose chosen option brings widgets."""
    return input_type(spec).startswith("COMFY_DYNAMICCOMBO")


def is_widget(spec) -> bool:
    t = input_type(spec)
    opts = input_options(spec)
    return (t in VALUE_TYPES or t == "COMBO" or is_dynamic_combo(spec)) and not opts.get("forceInput") \
        and not opts.get("hidden")


def has_control_value(name: str, spec) -> bool:
    """Whether the frontend stores a "fixed"/"randomize" control value right after this widget's value."""
    if input_type(spec) != "INT":
        return False
    return name in ("seed", "noise_seed") or bool(input_options(spec).get("control_after_generate"))


def extra_values(name: str, spec) -> list:
    """What the frontend stores right after a widget's value: a seed's control ("fixed") or an upload button's
    ("image", Load Image / Load Video)."""
    if has_control_value(name, spec):
        return ["fixed"]
    opts = input_options(spec)
    if any(opts.get(k) for k in ("image_upload", "video_upload", "animated_image_upload")):
        return ["image"]
    return []


def stored_widgets(info: dict, values: list) -> list[tuple[str, list, int, bool]]:
    """(name, spec, position in `values`, optional) of every widget a node stores, in order: its inputs' widgets,
    and the widgets a DynamicCombo's chosen option (read from `values`) adds right after it."""
    out, position = [], 0

    def walk(items):
        nonlocal position
        for name, kind, spec in items:
            if not is_widget(spec):
                continue
            out.append((name, spec, position, kind == "optional"))
            chosen = values[position] if position < len(values) else None
            position += 1 + len(extra_values(name, spec))
            if is_dynamic_combo(spec):
                option = next((o for o in input_options(spec).get("options", []) if o.get("key") == chosen), None)
                if option is not None:
                    walk(ordered_inputs({"input": option.get("inputs", {})}))

    walk(ordered_inputs(info))
    return out


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
                position += 1 + len(extra_values(name, spec))
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

    def __init__(self, object_info: dict, properties=None):
        """`properties(kind)` gives the extra node properties of a node class, e.g. the registry's cnr_id and ver,
        with which the frontend's Manager finds and installs a missing pack."""
        self.info = object_info
        self.properties = properties or (lambda kind: {})
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
                values += extra_values(name, spec)
        node_id = len(self.nodes) + 1
        inputs = [{"name": n, "type": input_type(s), "link": None} for n, _, s in specs if not is_widget(s)]
        outputs = [{"name": name, "type": t, "links": [], "slot_index": i}
                   for i, (t, name) in enumerate(zip(info["output"], info.get("output_name") or info["output"]))]
        size = size or self._size(kind, inputs, outputs, sum(1 for _, _, s in specs if is_widget(s)))
        node = {"id": node_id, "type": kind, "pos": [0, 0], "size": list(size),
                "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {**self.properties(kind), "Node name for S&R": kind}, "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        if pos is not None:
            self._placed[node_id] = pos
        return node_id

    def place(self, node_id: int, pos: tuple[float, float]) -> None:
        """Fix a node's position (nodes never placed are laid out in columns by depth)."""
        self._placed[node_id] = pos

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (420, 220),
             kind: str = "Note") -> int:
        """A Note (plain text) or MarkdownNote (rendered markdown) node: frontend-only, never in the API format."""
        node_id = len(self.nodes) + 1
        colours = {"color": "#432", "bgcolor": "#653"} if kind == "Note" else {}
        self.nodes.append({"id": node_id, "type": kind, "pos": list(pos), "size": list(size), "flags": {},
                           "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], **colours})
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
    def _size(kind, inputs, outputs, values: int) -> tuple[int, int]:
        """Room for the node's sockets and widgets as the frontend lays them out (previews get room to show)."""
        if kind in ("PreviewImage", "SaveImage"):
            return (300, 300)
        if kind == "PreviewAny":
            return (320, 190)
        rows = max(len(inputs), len(outputs))
        return (300, SLOT_HEIGHT * rows + WIDGET_HEIGHT * values + NODE_PADDING)

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
            y0 = min(n["pos"][1] for n in members) - TITLE_HEIGHT - 50
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
            "extra": {"ds": view_of(self.nodes, groups)},
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


# --- the saved view ----------------------------------------------------------------------------------------------


def graph_bounds(nodes: list[dict], groups: list[dict]) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of everything drawn, in graph units: nodes with their title bars, and groups."""
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in nodes]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
               g["bounding"][1] + g["bounding"][3]) for g in groups]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def on_screen(bounds, ds: dict) -> tuple[float, float, float, float]:
    """Graph-unit bounds as screen pixels under a view {"scale", "offset"}: screen = (graph + offset) * scale."""
    (x0, y0, x1, y1), s, (ox, oy) = bounds, ds["scale"], ds["offset"]
    return ((x0 + ox) * s, (y0 + oy) * s, (x1 + ox) * s, (y1 + oy) * s)


def view_of(nodes: list[dict], groups: list[dict]) -> dict:
    """The saved view ("extra.ds") that shows the whole graph as large as it fits (at most MAX_VIEW_SCALE) in one of
    the SAFE_VIEWS of a 1920x1080 window, centred there."""
    x0, y0, x1, y1 = graph_bounds(nodes, groups)
    best = None
    for left, top, right, bottom in SAFE_VIEWS:
        scale = min(MAX_VIEW_SCALE, (right - left - 2) / (x1 - x0), (bottom - top - 2) / (y1 - y0))  # 1 px spare
        if best is None or scale > best[0]:
            best = (scale, (left, top, right, bottom))
    scale, (left, top, right, bottom) = best
    scale = int(scale * 1000) / 1000  # a round number that still fits
    ox = ((left + right) / 2) / scale - (x0 + x1) / 2
    oy = ((top + bottom) / 2) / scale - (y0 + y1) / 2
    return {"scale": scale, "offset": [round(ox, 1), round(oy, 1)]}
