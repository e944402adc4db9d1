"""The bundled workflows against the node definitions (no ComfyUI needed), the UI <-> API conversion and checks
they rely on, and the headless client's pieces that need no server."""

import copy
import importlib.util
import json
import tomllib

import pytest

import comfy_stub
from comfy_tools import check_api, check_ui
from videopure_core.comfy_client import WorkflowError, WorkflowResult, load_workflow, set_inputs
from workflows.graph import (
    CORE_NODES, SAFE_VIEWS, SCREEN, UIGraph, graph_bounds, is_widget, object_info_of, on_screen, ordered_inputs,
    ui_to_api,
)

WORKFLOWS = comfy_stub.REPO / "workflows"
TEMPLATES = comfy_stub.REPO / "example_workflows"
NAMES = ["videopure_attack_compare", "videopure_one_node", "videopure_paper_pipeline", "videopure_video_file"]


def _build():
    spec = importlib.util.spec_from_file_location("build_workflows", WORKFLOWS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


BUILD = _build()
TITLES = {name: title for name, (title, _) in BUILD.WORKFLOWS.items()}


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    with comfy_stub.installed(tmp_path_factory.mktemp("models")):
        pack = comfy_stub.load_pack()
        return object_info_of(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)


def _ui(name):
    return json.loads((TEMPLATES / f"{TITLES[name]}.json").read_text())


def _api(name):
    return load_workflow(WORKFLOWS / "api" / f"{name}.json")


def test_the_four_workflows_are_there_as_templates_with_thumbnails_and_in_api_format():
    assert sorted(TITLES) == NAMES
    assert sorted(p.stem for p in TEMPLATES.glob("*.json")) == sorted(TITLES.values())
    assert sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")) == NAMES
    assert not list(WORKFLOWS.glob("*.json"))  # the template browser would list workflows/ as well
    for title in TITLES.values():
        thumbnail = (TEMPLATES / f"{title}.jpg").read_bytes()  # what the template browser shows next to the title
        assert thumbnail[:3] == b"\xff\xd8\xff" and 5_000 < len(thumbnail) < 300_000


@pytest.mark.parametrize("name", NAMES)
def test_templates_have_readable_titles_and_a_description(name):
    title = TITLES[name]
    assert title.startswith("VideoPure ") and not set(title) & set("_-")  # the browser shows the file name as is
    notes = [n for n in _ui(name)["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1 and notes[0]["widgets_values"][0].startswith("## ")
    assert "For the paper's setting" in notes[0]["widgets_values"][0]


@pytest.mark.parametrize("name", NAMES)
def test_templates_nodes_name_their_pack_for_the_manager(name):
    project = tomllib.loads((comfy_stub.REPO / "pyproject.toml").read_text())["project"]
    for node in _ui(name)["nodes"]:
        if node["type"] in ("Note", "MarkdownNote"):
            continue
        props = node["properties"]
        expected = (project["name"], project["version"]) if node["type"].startswith("VideoPure") else \
            ("comfy-core", "0.3.75")
        assert (props["cnr_id"], props["ver"]) == expected and props["Node name for S&R"] == node["type"]


@pytest.mark.parametrize("name", NAMES)
def test_the_saved_view_shows_the_whole_graph_at_a_readable_zoom(name):
    ui = _ui(name)
    ds = ui["extra"]["ds"]
    left, top, right, bottom = on_screen(graph_bounds(ui["nodes"], ui["groups"]), ds)
    assert ds["scale"] >= 0.75, "shrink the layout: the graph would be hard to read"
    assert any(left >= l and top >= t and right <= r and bottom <= b for l, t, r, b in SAFE_VIEWS), \
        f"the graph spans {left:.0f},{top:.0f}-{right:.0f},{bottom:.0f} px of a {SCREEN} window"


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_fits_the_node_definitions(info, name):
    ui = _ui(name)
    assert check_ui(ui, info) == []
    types = {n["type"] for n in ui["nodes"]}
    assert types <= set(info) | {"MarkdownNote"}  # only VideoPure nodes and core nodes present in 0.3.75 and 0.33
    assert {t for t in types if not t.startswith("VideoPure")} <= set(CORE_NODES) | {"MarkdownNote"}


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_fits_the_node_definitions_and_equals_the_ui_one(info, name):
    api = _api(name)
    assert check_api(api, info) == []
    assert ui_to_api(_ui(name), info) == api
    loaders = [n for n in api.values() if n["class_type"].endswith("Loader")]
    assert len(loaders) == 3 and all(n["inputs"].get("model", n["inputs"].get("weights")) == "bundled: small world"
                                     for n in loaders)


def test_video_workflow_reads_a_file_purifies_it_and_writes_it_at_the_inputs_frame_rate():
    api = _api("videopure_video_file")

    def only(kind):
        (node_id,) = [k for k, n in api.items() if n["class_type"] == kind]
        return node_id, api[node_id]["inputs"]

    load, load_in = only("LoadVideo")
    parts, parts_in = only("GetVideoComponents")
    fit, fit_in = only("VideoPureFitVideo")
    purify, purify_in = only("VideoPurePurify")
    create, create_in = only("CreateVideo")
    _, save_in = only("SaveVideo")
    assert load_in["file"] == BUILD.SAMPLE_VIDEO and parts_in["video"] == [load, 0]
    assert fit_in["images"] == [parts, 0] and purify_in["images"] == [fit, 0]
    assert create_in["images"] == [purify, 0] and create_in["fps"] == [parts, 2] and create_in["audio"] == [parts, 1]
    assert save_in["video"] == [create, 0] and save_in["filename_prefix"].startswith("videopure/")


def test_the_sample_clip_is_a_held_out_world_clip():
    import av
    import numpy as np

    from videopure_core.world.generator import SPLIT_SEEDS, WorldSpec, make_clip

    with av.open(str(TEMPLATES / BUILD.SAMPLE_VIDEO)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        fps = float(stream.average_rate)
    expected = (make_clip(1, SPLIT_SEEDS["test"] + 1, WorldSpec(frames=16)).video.numpy() * 255)
    assert frames.shape == (16, 64, 64, 3) and fps == 8.0
    assert float(np.abs(frames.astype(float) - expected).mean()) < 6  # H.264 at crf 12 (of 255)


def test_paper_pipeline_chains_t_star_guided_steps_from_the_inversion(info):
    api = _api("videopure_paper_pipeline")
    (inversion,) = [k for k, n in api.items() if n["class_type"] == "VideoPureTemporalInversion"]
    steps = [k for k, n in api.items() if n["class_type"] == "VideoPureGuidedDenoiseStep"]
    assert len(steps) == api[inversion]["inputs"]["t_star"] == 6
    source, chain = inversion, []
    while True:
        nxt = [k for k in steps if api[k]["inputs"]["latent"] == [source, 0]]
        if not nxt:
            break
        source = nxt[0]
        chain.append(source)
    assert sorted(chain) == sorted(steps)
    (decode,) = [n for n in api.values() if n["class_type"] == "VideoPureCandidateDecode"]
    assert decode["inputs"]["candidates"] == [chain[-1], 1]


def test_files_are_what_workflows_build_py_makes(info):
    stale = [str(p) for p, text in BUILD.render(info).items() if p.read_text() != text]
    assert stale == [], "run `python workflows/build.py` after changing nodes or workflows"


# --- the checks can fail ----------------------------------------------------------------------------------------


def test_checks_catch_wrong_values_types_and_positions(info):
    ui, api = _ui("videopure_one_node"), _api("videopure_one_node")
    purify_ui = next(n for n in ui["nodes"] if n["type"] == "VideoPurePurify")
    purify_id = str(purify_ui["id"])

    swapped = copy.deepcopy(ui)  # t_star and temporal exchanged: a reordered widget list
    node = next(n for n in swapped["nodes"] if n["id"] == purify_ui["id"])
    node["widgets_values"][0], node["widgets_values"][1] = node["widgets_values"][1], node["widgets_values"][0]
    assert any("t_star=True is not an integer" in p for p in check_ui(swapped, info))

    short = copy.deepcopy(ui)
    next(n for n in short["nodes"] if n["id"] == purify_ui["id"])["widgets_values"].pop()
    assert any("widget values, expected" in p for p in check_ui(short, info))

    wrong_link = copy.deepcopy(ui)  # the model wire retyped as IMAGE
    link = next(lk for lk in wrong_link["links"] if lk[3] == purify_ui["id"] and lk[5] == "VIDEOPURE_MODEL")
    link[5] = "IMAGE"
    assert any("type IMAGE" in p for p in check_ui(wrong_link, info))

    bad = copy.deepcopy(api)
    bad[purify_id]["inputs"]["t_star"] = 0
    bad[purify_id]["inputs"]["images"] = ["1", 0]  # a VIDEOPURE_MODEL into IMAGE
    bad[purify_id]["inputs"]["colour"] = 1
    del bad[purify_id]["inputs"]["model"]
    bad["99"] = {"class_type": "NoSuchNode", "inputs": {}}
    problems = " | ".join(check_api(bad, info))
    for expected in ("t_star=0 is below its minimum 1", "gets VIDEOPURE_MODEL", "unknown input 'colour'",
                     "required input 'model' is missing", "unknown class_type 'NoSuchNode'"):
        assert expected in problems


def test_seed_widgets_store_a_control_value_and_linked_widgets_keep_theirs():
    info = {
        "Sampler": {"input": {"required": {"latent": ["LATENT", {}], "seed": ["INT", {"default": 5}],
                                           "steps": ["INT", {"default": 20, "min": 1}]}},
                    "output": ["LATENT"], "output_name": ["LATENT"], "output_node": True},
        "Number": {"input": {"required": {}}, "output": ["INT", "LATENT"], "output_name": ["n", "latent"]},
    }
    g = UIGraph(info)
    number, sampler = g.add("Number"), g.add("Sampler", seed=7)
    g.connect(number, "latent", sampler, "latent")
    g.connect(number, "n", sampler, "steps")
    ui = g.ui()
    assert ui["nodes"][1]["widgets_values"] == [7, "fixed", 20]
    assert ui["nodes"][1]["inputs"][1] == {"name": "steps", "type": "INT", "link": 2, "widget": {"name": "steps"}}
    assert check_ui(ui, info) == []
    assert ui_to_api(ui, info)["2"]["inputs"] == {"latent": ["1", 1], "seed": 7, "steps": ["1", 0]}


def test_widget_values_follow_upload_buttons_dynamic_combos_and_late_optional_widgets():
    dynamic = ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "auto", "inputs": {"required": {"codec": ["COMFY_DYNAMICCOMBO_V3", {"options": [
            {"key": "auto", "inputs": {"required": {}}}]}]}}}, {"key": "mp4", "inputs": {"required": {}}}]}]
    info = {  # Load Video and Save Video as ComfyUI 0.33 defines them, Create Video with its later bit_depth
        "LoadVideo": {"input": {"required": {"file": ["COMBO", {"options": ["a.mp4"], "video_upload": True}]}},
                      "output": ["VIDEO"], "output_name": ["VIDEO"]},
        "SaveVideo": {"input": {"required": {"video": ["VIDEO", {}], "prefix": ["STRING", {}], "format": dynamic},
                                "optional": {"codec": ["COMBO", {"options": ["auto"], "hidden": True}]}},
                      "output": [], "output_name": [], "output_node": True},
        "CreateVideo": {"input": {"required": {"images": ["VIDEO", {}], "fps": ["FLOAT", {"default": 30.0}]},
                                  "optional": {"bit_depth": ["INT", {"default": 8}]}},
                        "output": ["VIDEO"], "output_name": ["VIDEO"]},
    }
    g = UIGraph(info)
    load, create, save = g.add("LoadVideo"), g.add("CreateVideo"), g.add("SaveVideo")
    g.connect(load, "VIDEO", create, "images")
    g.connect(create, "VIDEO", save, "video")
    ui = g.ui()
    assert ui["nodes"][0]["widgets_values"] == ["a.mp4", "image"]
    ui["nodes"][1]["widgets_values"] = [24.0]  # saved before bit_depth existed: the frontend fills in its default
    ui["nodes"][2]["widgets_values"] = ["v", "auto", "auto"]  # prefix, format, the codec of format=auto
    assert check_ui(ui, info) == []
    ui["nodes"][2]["widgets_values"] = ["v", "mp4", "auto"]  # format=mp4 brings no codec widget
    assert any("3 widget values, expected 2" in p for p in check_ui(ui, info))
    ui["nodes"][2]["widgets_values"] = ["v", "avi"]
    assert any("format='avi' is not one of ['auto', 'mp4']" in p for p in check_ui(ui, info))


def test_widget_inputs_follow_definition_order(info):
    names = [n for n, _, s in ordered_inputs(info["VideoPurePGDAttack"]) if is_widget(s)]
    assert names == ["label", "epsilon", "step_size", "steps", "norm", "random_start", "start_seed"]


# --- headless client pieces -------------------------------------------------------------------------------------


def test_client_refuses_ui_files_and_sets_inputs(tmp_path):
    with pytest.raises(ValueError, match="UI-format workflow.*workflows/api/"):
        load_workflow(TEMPLATES / f"{TITLES['videopure_one_node']}.json")
    api = _api("videopure_one_node")
    changed = set_inputs(api, ["4.index=7", '4.split="val"', "6.guidance_reference=32,28,28"])
    assert changed["4"]["inputs"]["index"] == 7 and changed["4"]["inputs"]["split"] == "val"
    assert changed["6"]["inputs"]["guidance_reference"] == "32,28,28" and api["4"]["inputs"]["index"] == 1
    changed = set_inputs(api, ["6.guidance_reference=32x28x28", "6.guidance=false", "1.dtype=none"])
    assert changed["6"]["inputs"]["guidance_reference"] == "32x28x28"  # no tuples (nor None) in ComfyUI inputs
    assert changed["6"]["inputs"]["guidance"] is False and changed["1"]["inputs"]["dtype"] == "none"
    with pytest.raises(ValueError, match="no node '42'"):
        set_inputs(api, ["42.index=1"])
    with pytest.raises(ValueError, match="NODE.INPUT=VALUE"):
        set_inputs(api, ["index=1"])


def test_client_reads_history_entries():
    entry = {"status": {"status_str": "success", "messages": []},
             "outputs": {"8": {"text": ["vote table"]},
                         "9": {"images": [{"filename": "a.png", "subfolder": "videopure", "type": "output"}]}}}
    result = WorkflowResult("p1", entry, 1.5)
    assert result.texts == {"8": ["vote table"]}
    assert result.images == [{"node_id": "9", "filename": "a.png", "subfolder": "videopure", "type": "output"}]
    failed = {"status": {"status_str": "error", "messages": [["execution_error", {
        "node_id": "1", "node_type": "VideoPureDiffusionLoader", "exception_type": "ModelNotFoundError",
        "exception_message": "No diffusion model folder 'x'"}]]}}
    err = WorkflowError(failed)
    assert str(err) == "node 1 (VideoPureDiffusionLoader) raised ModelNotFoundError: No diffusion model folder 'x'"


# --- the Comfy registry ----------------------------------------------------------------------------------------------


def _pyproject():
    return tomllib.loads((comfy_stub.REPO / "pyproject.toml").read_text())


def test_pyproject_has_what_the_registry_needs_and_never_lists_torch():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] == "VideoPure" and comfy["requires-comfyui"] == ">=0.3.75"
    os_values = [c for c in project["classifiers"] if c.startswith("Operating System :: ")]
    assert os_values == ["Operating System :: OS Independent"]  # comfy-cli reads these as the supported systems
    assert "Environment :: GPU :: NVIDIA CUDA" in project["classifiers"]
    names = [d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in project["dependencies"]]
    assert "torch" not in names and "torchvision" not in names  # ComfyUI's torch must never be replaced
    assert {"torch", "torchvision"} <= {d.split(">")[0] for d in project["optional-dependencies"]["torch"]}
    requirements = [line.split("#")[0].strip() for line in (comfy_stub.REPO / "requirements.txt").read_text()
                    .splitlines() if line.split("#")[0].strip()]
    assert not any(r.lower().startswith(("torch", "torchvision")) for r in requirements)
    assert {r.split(">")[0].lower() for r in requirements} - {"pillow"} <= set(names)
    assert "accelerate" in names  # fast, lean loading of the 1.7B weights, and no "install accelerate" warning


def _packed_files() -> list[str]:
    """The git-tracked files `comfy node publish` would pack: minus .comfyignore (whose patterns are plain
    directory or file names, which is all this matcher handles exactly)."""
    import subprocess

    tracked = subprocess.run(["git", "-C", str(comfy_stub.REPO), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    patterns = [p.strip() for p in (comfy_stub.REPO / ".comfyignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert all(set(p) <= set("abcdefghijklmnopqrstuvwxyz._-/") for p in patterns), patterns
    dirs = [p.strip("/") + "/" for p in patterns if p.endswith("/")]
    names = [p for p in patterns if not p.endswith("/")]
    return [f for f in tracked if not any(f.startswith(d) or ("/" + d) in ("/" + f) for d in dirs)
            and f.rsplit("/", 1)[-1] not in names]


@pytest.mark.skipif(not __import__("shutil").which("git") or not (comfy_stub.REPO / ".git").exists(),
                    reason="not a git checkout")
def test_the_registry_package_has_the_node_pack_without_tests_docs_or_benchmarks():
    packed = _packed_files()
    assert not [f for f in packed if f.startswith(("tests/", "docs/", "benchmarks/", ".github/", ".ci/"))]
    for needed in ("__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "nodes/bridge.py",
                   "web/videopure.js", "workflows/api/videopure_one_node.json", "videopure_core/pipeline.py",
                   "example_workflows/videopure_world_clip.mp4",
                   "videopure_core/world/weights/raft_small.safetensors"):
        assert needed in packed, needed
    assert sum(f.startswith("example_workflows/") and f.endswith(".json") for f in packed) == len(TITLES)


def test_the_publish_workflow_publishes_with_the_registry_action():
    text = (comfy_stub.REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "uses: Comfy-Org/publish-node-action@v1" in text
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in text and 'paths: ["pyproject.toml"]' in text
