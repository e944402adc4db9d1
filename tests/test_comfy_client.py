"""The headless ComfyUI client (`videopure comfy-run`) against a fake server on 127.0.0.1 (tests/fake_comfy.py):
progress over ws:// and wss://, the /history fallback, the Host header, node_errors on a 200 answer, per-prompt
interrupts and cancelling. tests/comfyui runs the same client against a real ComfyUI."""

import argparse
import json
import shutil
import ssl
import subprocess

import pytest

from fake_comfy import FakeComfy
from videopure_core import comfy_client
from videopure_core.comfy_client import (
    ComfyClient,
    PromptRejected,
    WorkflowError,
    run_workflow,
    websocket_target,
)

WORKFLOW = {"4": {"class_type": "VideoPureWorldClip", "inputs": {"index": 1}},
            "6": {"class_type": "VideoPurePurify", "inputs": {"t_star": 6, "images": ["4", 0]}},
            "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 3]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["6", 0]}}}


def progress_messages(prompt_id):
    """What ComfyUI sends during a run: other prompts' messages and previews are in between."""
    return [
        json.dumps({"type": "execution_start", "data": {"prompt_id": prompt_id}}),
        json.dumps({"type": "progress", "data": {"value": 1, "max": 9, "node": "6", "prompt_id": "someone-else"}}),
        b"\x00\x00\x00\x01\x00\x00\x00\x02preview",
        json.dumps({"type": "progress", "data": {"value": 2, "max": 6, "node": "6", "prompt_id": prompt_id}}),
        json.dumps({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}),
    ]


def run_cli(fake, tmp_path, *extra):
    parser = argparse.ArgumentParser()
    comfy_client.add_arguments(parser)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(WORKFLOW))
    return comfy_client.run(parser.parse_args([str(path), "--server", fake.url, "--out", str(tmp_path / "out"),
                                               *extra]))


@pytest.fixture
def fake():
    with FakeComfy() as server:
        yield server


def test_progress_arrives_on_the_websocket_and_the_result_from_history(fake):
    fake.messages = progress_messages
    seen = []
    result = run_workflow(ComfyClient(fake.url), WORKFLOW, lambda *a: seen.append(a), timeout=30)
    assert seen == [("6 VideoPurePurify", 2, 6)]  # not the other prompt's, not the preview
    assert result.texts == {"7": ["vote table: winner disk-right"]}
    assert result.images == [{"node_id": "9", "filename": "one_node_00001_.png", "subfolder": "videopure",
                              "type": "output"}]
    (ws_headers,) = [h for m, p, h, _ in fake.requests if p == "/ws"]
    (prompt,) = fake.bodies("/prompt")
    assert prompt["prompt"] == WORKFLOW and ws_headers["Upgrade"].lower() == "websocket"
    port = fake.url.rsplit(":", 1)[1]
    assert ws_headers["Host"] == f"127.0.0.1:{port}"  # the URL's host:port as written
    assert "/interrupt" not in fake.paths() and "/queue" not in fake.paths()


def test_without_a_websocket_the_client_polls_history(fake):
    fake.websocket = False  # /ws answers 404
    seen = []
    result = run_workflow(ComfyClient(fake.url), WORKFLOW, lambda *a: seen.append(a), timeout=30)
    assert seen == [] and result.texts == {"7": ["vote table: winner disk-right"]}
    assert fake.paths("GET").count("/ws") == 1 and any(p.startswith("/history/") for p in fake.paths("GET"))


def test_websocket_url_and_host_header_follow_the_server_url():
    assert websocket_target("http://example.com", "c1") == ("ws://example.com/ws?clientId=c1", "example.com")
    assert websocket_target("http://127.0.0.1:8188/", "c1") == ("ws://127.0.0.1:8188/ws?clientId=c1",
                                                                "127.0.0.1:8188")
    assert websocket_target("https://user:pw@comfy.example.org/base", "c 2") == (
        "wss://comfy.example.org/base/ws?clientId=c+2", "comfy.example.org")  # no default port added, no userinfo
    with pytest.raises(ValueError, match="http://host:port"):
        ComfyClient("ws://127.0.0.1:8188")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_https_servers_get_wss(certificate):
    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    with FakeComfy(tls=server_side) as fake:
        fake.messages = progress_messages
        assert fake.url.startswith("https://")
        seen = []
        client = ComfyClient(fake.url, ssl_context=ssl.create_default_context(cafile=str(cert)))
        result = run_workflow(client, WORKFLOW, lambda *a: seen.append(a), timeout=30)
        assert seen == [("6 VideoPurePurify", 2, 6)]  # progress came over wss://
        assert result.texts == {"7": ["vote table: winner disk-right"]}
        with pytest.raises(ssl.SSLCertVerificationError):  # the certificate is checked (unknown by default)
            ComfyClient(fake.url).websocket("x", timeout=5)


def node_errors_answer(body):
    """ComfyUI's answer when the Purify node fails validation but the input preview would still run."""
    if body["prompt"]["6"]["inputs"]["t_star"] >= 1:
        return 200, {"prompt_id": "p-ok", "number": 0, "node_errors": {}}
    return 200, {"prompt_id": "p-partial", "number": 1, "node_errors": {"6": {
        "errors": [{"type": "value_smaller_than_min", "message": "Value 0 smaller than min of 1",
                    "details": "t_star", "extra_info": {"input_name": "t_star", "received_value": 0}}],
        "dependent_outputs": ["7", "9"], "class_type": "VideoPurePurify"}}}


def test_a_200_answer_with_node_errors_is_a_failure_that_prints_them(fake, tmp_path, capsys):
    fake.answer = node_errors_answer
    fake.finish = False  # the partial prompt is running when the client cancels it
    assert run_cli(fake, tmp_path, "--set", "6.t_star=0") == 1
    out = capsys.readouterr().out
    assert "ComfyUI refused the workflow" in out and "1 node(s) failed validation" in out
    assert "  node 6 (VideoPurePurify): Value 0 smaller than min of 1: t_star" in out
    assert "finished in" not in out and not (tmp_path / "out").exists()
    assert fake.bodies("/queue") == [{"delete": ["p-partial"]}, None]  # dequeued, then /queue read
    assert fake.bodies("/interrupt") == [{"prompt_id": "p-partial"}]  # running: interrupted, only it

    with pytest.raises(PromptRejected) as err:
        ComfyClient(fake.url).queue_prompt({**WORKFLOW, "6": {**WORKFLOW["6"], "inputs": {"t_star": 0}}})
    assert err.value.lines() == ["node 6 (VideoPurePurify): Value 0 smaller than min of 1: t_star"]


def test_a_400_answer_is_a_failure_with_comfyuis_message(fake, tmp_path, capsys):
    error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
             "details": "", "extra_info": {}}
    node_errors = node_errors_answer({"prompt": {"6": {"inputs": {"t_star": 0}}}})[1]["node_errors"]
    fake.answer = lambda body: (400, {"error": error, "node_errors": node_errors})
    assert run_cli(fake, tmp_path) == 1
    out = capsys.readouterr().out
    assert "prompt rejected: Prompt outputs failed validation" in out and "node 6 (VideoPurePurify)" in out
    assert "/queue" not in fake.paths()  # nothing was queued


def test_interrupts_are_per_prompt_and_cancel_checks_what_runs(fake):
    client = ComfyClient(fake.url)
    client.interrupt("p1")
    client.interrupt()
    assert fake.bodies("/interrupt") == [{"prompt_id": "p1"}, {}]  # the second one: whatever runs (Cancel button)
    client.cancel("not-running")
    assert fake.bodies("/queue") == [{"delete": ["not-running"]}, None] and len(fake.bodies("/interrupt")) == 2


def test_a_timeout_cancels_only_this_prompt(fake):
    fake.finish = False
    with pytest.raises(TimeoutError):
        run_workflow(ComfyClient(fake.url), WORKFLOW, timeout=1.0)
    (prompt_id,) = fake.queued
    assert fake.bodies("/interrupt") == [{"prompt_id": prompt_id}]


def test_cli_prints_texts_and_saves_images_and_reports_node_failures(fake, tmp_path, capsys):
    assert run_cli(fake, tmp_path, "--set", "4.index=7") == 0
    out = capsys.readouterr().out
    assert "--- node 7 (PreviewAny)\nvote table: winner disk-right" in out and "1 image(s) saved" in out
    assert (tmp_path / "out" / "9_one_node_00001_.png").read_bytes() == b"PNG:one_node_00001_.png"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["9_one_node_00001_.png"]
    assert fake.bodies("/prompt")[0]["prompt"]["4"]["inputs"]["index"] == 7

    fake.entry = lambda prompt_id: {"status": {"status_str": "error", "messages": [["execution_error", {
        "prompt_id": prompt_id, "node_id": "6", "node_type": "VideoPurePurify", "exception_type": "VideoInputError",
        "exception_message": "1 frame(s); VideoPure needs at least 2"}]]}, "outputs": {}}
    with pytest.raises(WorkflowError, match="node 6 \\(VideoPurePurify\\) raised VideoInputError"):
        run_workflow(ComfyClient(fake.url), WORKFLOW, timeout=30)
    assert run_cli(fake, tmp_path) == 1
    assert "comfy-run: node 6 (VideoPurePurify) raised VideoInputError: 1 frame(s)" in capsys.readouterr().out


def test_cli_without_a_server_or_with_a_bad_assignment_exits_2(fake, tmp_path, capsys):
    assert run_cli(fake, tmp_path, "--set", "42.index=1") == 2
    assert "the workflow has no node '42'" in capsys.readouterr().out
    fake.__exit__()
    assert run_cli(fake, tmp_path) == 2
    assert "no ComfyUI server answers at" in capsys.readouterr().out
