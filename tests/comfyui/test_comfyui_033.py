"""The node pack in a real ComfyUI 0.33 (the current release), which CI does not install: these tests run when a
0.33 tree and a Python that runs it are given, and skip otherwise.

    VIDEOPURE_COMFY033=/path/to/ComfyUI-0.33 VIDEOPURE_COMFY033_PYTHON=/path/to/python pytest tests/comfyui -k 033

(The Python needs ComfyUI 0.33's requirements.txt, torchaudio included; see docs/comfyui.md for how it was set up.)
What 0.33 adds: the core OPTICAL_FLOW model (Load Optical Flow Model, torchvision raft_large in a ModelPatcher, from
models/optical_flow/), which VideoPure's RAFT sockets take; search aliases and output tooltips in /object_info;
Save Video's DynamicCombo. The rest is checked as on 0.3.75: the pack imports (a second copy does not), every
template fits the server's definitions, every API workflow runs, Cancel stops a long network call within a second.
"""

import json
import os
import sys
from pathlib import Path

import pytest

import comfy_setup
import comfy_stub
from comfy_tools import ComfyUIServer, check_api, check_ui, interrupt_latency
from videopure_core.comfy_client import load_workflow, run_workflow

pytestmark = pytest.mark.comfyui

REPO = comfy_stub.REPO
TREE = os.environ.get("VIDEOPURE_COMFY033")
PYTHON = os.environ.get("VIDEOPURE_COMFY033_PYTHON")
API_FILES = sorted((REPO / "workflows" / "api").glob("*.json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (TREE and PYTHON):
        pytest.skip("set VIDEOPURE_COMFY033 (a ComfyUI 0.33 tree) and VIDEOPURE_COMFY033_PYTHON to run these")
    root = tmp_path_factory.mktemp("comfy033")
    base, yaml = comfy_setup.make_base(root)
    raft_large = base / "models" / "optical_flow" / "raft_large_random.pth"  # what OpticalFlowLoader recognises
    import torch
    from torchvision.models.optical_flow import raft_large as build

    torch.manual_seed(0)
    torch.save(build(weights=None).state_dict(), raft_large)
    srv = ComfyUIServer.start(Path(TREE), python=PYTHON, base_directory=base, log_path=base / "comfyui.log",
                              timeout=600, env=comfy_setup.server_env(), extra_model_paths=yaml)
    srv.models_dir = base / "models"
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def test_server_is_comfyui_0_33_and_the_pack_imports_once(server):
    assert server.system_stats()["system"]["comfyui_version"].startswith("0.33")
    failed = comfy_setup.import_failures(server.log_text())
    assert [line.rsplit("/", 1)[-1] for line in failed] == [comfy_setup.COPY], server.log_tail(80)
    assert comfy_setup.DUPLICATE_MESSAGE in server.log_text()


def test_object_info_has_search_aliases_output_tooltips_and_takes_core_optical_flow(object_info):
    purify = object_info["VideoPurePurify"]
    assert "purify video" in purify["search_aliases"] and len(purify["output_tooltips"]) == 5
    assert all(object_info[n]["search_aliases"] for n in object_info if n.startswith("VideoPure"))
    assert object_info["OpticalFlowLoader"]["output"] == ["OPTICAL_FLOW"]
    for node, kind in (("VideoPureRAFTFlow", "required"), ("VideoPurePurify", "optional")):
        assert "OPTICAL_FLOW" in object_info[node]["input"][kind]["raft"][0].split(",")
    assert "raft_large_random.pth" in object_info["VideoPureRAFTLoader"]["input"]["required"]["weights"][0]


@pytest.mark.parametrize("path", API_FILES, ids=[p.stem for p in API_FILES])
def test_templates_fit_and_api_workflows_run(server, object_info, path):
    title = comfy_setup.template_titles()[path.stem]
    ui = json.loads((REPO / "example_workflows" / f"{title}.json").read_text())
    assert check_ui(ui, object_info) == []
    workflow = load_workflow(path)
    assert check_api(workflow, object_info) == []
    result = run_workflow(server, workflow, timeout=900)
    print(f"0.33 {path.stem}: {result.seconds:.1f} s", file=sys.stderr)
    assert any("winner" in t for texts in result.texts.values() for t in texts)


def test_raft_flow_takes_the_core_optical_flow_model(server):
    """ComfyUI's Load Optical Flow Model and VideoPure's RAFT Loader read the same raft_large file from
    models/optical_flow: RAFT Flow gives the same flow with either (saved as the same pictures)."""
    workflow = {**comfy_setup.long_clip(3, repeat=1),
                "20": {"class_type": "OpticalFlowLoader", "inputs": {"model_name": "raft_large_random.pth"}},
                "21": {"class_type": "VideoPureRAFTLoader", "inputs": {"weights": "raft_large_random.pth",
                                                                       "arch": "raft_large", "keep_loaded": False}}}
    for i, source in enumerate(("20", "21")):
        workflow[f"3{i}"] = {"class_type": "VideoPureRAFTFlow", "inputs": {
            "raft": [source, 0], "images": ["4", 0], "latent": ["5", 0], "iters": 4, "input_range": "-1,1",
            "bidirectional": False, "occlusion_mask": False, "chunk": 16}}
        workflow[f"4{i}"] = {"class_type": "VideoPureFlowImage", "inputs": {"flow": [f"3{i}", 0]}}
        workflow[f"5{i}"] = {"class_type": "SaveImage", "inputs": {"images": [f"4{i}", 0],
                                                                   "filename_prefix": f"videopure/flow{i}"}}
    result = run_workflow(server, workflow, timeout=900)
    core, ours = ([server.view(img["filename"], img["subfolder"], "output") for img in result.images
                   if img["node_id"] == node] for node in ("50", "51"))
    assert len(core) == len(ours) == 15 and core == ours


def test_cancel_stops_a_long_network_call_within_a_second(server):
    for name, workflow, node in (("flow", comfy_setup.flow_workflow(12), "6"),
                                 ("inversion", comfy_setup.inversion_workflow(12), "9")):
        latency, interrupted, ran = interrupt_latency(server, workflow, node, wait=1.0)
        print(f"0.33 Cancel in {name}: {latency * 1000:.0f} ms after {ran:.1f} s", file=sys.stderr)
        assert interrupted == node and latency < 1.0


def test_no_install_accelerate_warning_when_loading_models(server):
    log = server.log_text().lower().replace("opengl_accelerate", "")  # PyOpenGL's own optional module
    assert "accelerate" not in log
