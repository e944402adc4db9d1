"""The ModelScope folder as users download it (diffusers layout, fp16 variant files only, CLIP tokenizer files,
model_index.json), saved with tiny networks by videopure_core.modelscope.save_modelscope_folder: diffusers' own
pipeline class accepts it, the tokenizer encodes the empty prompt as CLIP does, and every entry point (library,
`videopure demo`, `videopure purify`) runs on it. tests/test_full_size.py does the same at full size (opt-in)."""

import json

import pytest
import torch

from videopure_core import Purifier, PurifyConfig, from_frames, load_raft, load_video_classifier
from videopure_core.cli import main
from videopure_core.io import BUNDLED_CLIPS, bundled_clip
from videopure_core.modelscope import MODEL_INDEX, R3D_18_FILE, RAFT_LARGE_FILE, save_modelscope_folder, small_clip_bpe


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    out = save_modelscope_folder(root, tiny=True, log=lambda s: None)
    return root, out


def test_the_layout_is_the_fp16_download(download):
    root, out = download
    model = root / "text-to-video-ms-1.7b"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == sorted([
        R3D_18_FILE, RAFT_LARGE_FILE, "text-to-video-ms-1.7b/model_index.json",
        "text-to-video-ms-1.7b/scheduler/scheduler_config.json",
        "text-to-video-ms-1.7b/text_encoder/config.json", "text-to-video-ms-1.7b/text_encoder/model.fp16.safetensors",
        "text-to-video-ms-1.7b/tokenizer/merges.txt", "text-to-video-ms-1.7b/tokenizer/special_tokens_map.json",
        "text-to-video-ms-1.7b/tokenizer/tokenizer_config.json", "text-to-video-ms-1.7b/tokenizer/vocab.json",
        "text-to-video-ms-1.7b/unet/config.json", "text-to-video-ms-1.7b/unet/diffusion_pytorch_model.fp16.safetensors",
        "text-to-video-ms-1.7b/vae/config.json", "text-to-video-ms-1.7b/vae/diffusion_pytorch_model.fp16.safetensors",
    ])
    index = json.loads((model / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k != "_diffusers_version"} == MODEL_INDEX
    scheduler = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["beta_schedule"] == "scaled_linear" and scheduler["steps_offset"] == 1
    assert scheduler["set_alpha_to_one"] is False


def test_diffusers_own_pipeline_class_loads_the_folder(download):
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline.from_pretrained(download[0] / "text-to-video-ms-1.7b", variant="fp16",
                                                 local_files_only=True)
    assert type(pipe.unet).__name__ == "UNet3DConditionModel" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipe.tokenizer).__name__ == "CLIPTokenizer" and pipe.tokenizer.model_max_length == 77


def test_the_small_bpe_vocabulary_tokenizes_as_clip_does(download):
    from transformers import CLIPTokenizer

    vocab, merges = small_clip_bpe()
    assert len(vocab) == 512 + len(merges) + 2 and vocab["!"] == 0 and vocab["<|endoftext|>"] == len(vocab) - 1
    tok = CLIPTokenizer.from_pretrained(download[0] / "text-to-video-ms-1.7b" / "tokenizer", local_files_only=True)
    empty = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0].tolist()
    assert empty == [tok.bos_token_id, tok.eos_token_id] + [0] * 75  # padded with "!" (id 0), as OpenCLIP pads
    words = tok.convert_ids_to_tokens(tok("A video of the person boxing").input_ids)
    assert words == ["<|startoftext|>", "a</w>", "video</w>", "of</w>", "the</w>", "person</w>", "boxing</w>",
                     "<|endoftext|>"]


def test_from_pretrained_on_the_download_computes_the_embedding_once_and_purifies(download):
    root, out = download
    model = root / "text-to-video-ms-1.7b"
    (model / "empty_prompt.safetensors").unlink(missing_ok=True)
    raft = load_raft("raft_large", root / RAFT_LARGE_FILE)
    purifier = Purifier.from_pretrained(model, raft, PurifyConfig(t_star=2))
    assert (model / "empty_prompt.safetensors").is_file() and purifier.models.embedding.shape == (1, 77, 32)
    classifier = load_video_classifier("r3d_18", root / R3D_18_FILE)
    result = purifier.predict(from_frames(bundled_clip("21", 4, 32)), classifier)
    assert result.logits.shape == (3, 1, 400) and torch.isfinite(result.logits).all()


def test_demo_and_purify_commands_on_the_download(download, tmp_path, capsys):
    root, _ = download
    model, raft, weights = str(root / "text-to-video-ms-1.7b"), str(root / RAFT_LARGE_FILE), str(root / R3D_18_FILE)
    small = ["--frames", "4", "--size", "32", "--t-star", "2"]
    assert main(["demo", "--model", model, "--raft", raft, "--classifier-weights", weights, "--video",
                 str(BUNDLED_CLIPS / "17"), *small, "--device", "cpu", "--out", str(tmp_path / "demo.png")]) == 0
    assert "winner" in capsys.readouterr().out
    out = tmp_path / "purify"
    assert main(["purify", str(BUNDLED_CLIPS / "17"), "--model", model, "--raft", raft, "--classifier", weights,
                 *small, "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["classifier"] == f"r3d_18: {weights}" and len(report["candidates"]) == 3
    assert all(c["class"] for c in report["candidates"]) and report["config"] == {"t_star": 2}  # Kinetics-400 names
    assert (out / "purified.mp4").stat().st_size > 0
