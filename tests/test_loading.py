import json

import pytest
import torch
from safetensors.torch import save_file

from videopure_core import (
    MODELSCOPE_SCHEDULER_CONFIG,
    ModelNotFoundError,
    Purifier,
    PurifyConfig,
    encode_empty_prompt,
    load_diffusion,
    load_raft,
    load_video_classifier,
    load_weights,
)
from videopure_core.loading import EMBEDDING_FILE
from videopure_core.tiny import tiny_unet, tiny_vae


def tiny_clip(folder):
    """A tiny CLIP text encoder + tokenizer saved in diffusers layout under folder/text_encoder, folder/tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    tok_dir = folder / "tok_src"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=8)
    torch.manual_seed(3)
    config = CLIPTextConfig(
        vocab_size=4, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    encoder = CLIPTextModel(config).eval()
    tokenizer.save_pretrained(folder / "tokenizer")
    encoder.save_pretrained(folder / "text_encoder")
    return encoder, tokenizer


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "t2v"
    unet, vae = tiny_unet(0), tiny_vae(1)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(MODELSCOPE_SCHEDULER_CONFIG))
    encoder, tokenizer = tiny_clip(folder)
    return folder, unet, vae, encode_empty_prompt(encoder, tokenizer)


def test_save_then_load_gives_identical_outputs(model_folder):
    folder, unet, vae, embedding = model_folder
    m = load_diffusion(folder)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m.unet(z, 21, encoder_hidden_states=embedding).sample, unet(z, 21, encoder_hidden_states=embedding).sample)
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(m.vae.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean)
    assert torch.equal(m.embedding, embedding) and m.embedding.shape == (1, 8, 32)
    assert m.scheduler_config["beta_schedule"] == "scaled_linear"


def test_empty_prompt_embedding_is_cached_and_text_encoder_not_needed_again(model_folder):
    import shutil

    folder, _, _, embedding = model_folder
    load_diffusion(folder)
    assert (folder / EMBEDDING_FILE).is_file()
    shutil.rmtree(folder / "text_encoder")
    shutil.rmtree(folder / "tokenizer")
    assert torch.equal(load_diffusion(folder).embedding, embedding)
    (folder / EMBEDDING_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match="text_encoder"):
        load_diffusion(folder)


def test_fp16_variant_folders_load(tmp_path):
    folder = tmp_path / "fp16"
    tiny_unet(0).half().save_pretrained(folder / "unet", variant="fp16")  # fp16 values, as downloaded
    tiny_vae(1).half().save_pretrained(folder / "vae", variant="fp16")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(MODELSCOPE_SCHEDULER_CONFIG))
    save_file({"embedding": torch.zeros(1, 8, 32)}, str(folder / EMBEDDING_FILE))
    m = load_diffusion(folder)
    # the fp16 files' values, read into float32: the tiny models' weights rounded through fp16
    for loaded, source in ((m.unet, tiny_unet(0)), (m.vae, tiny_vae(1))):
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        for (name, a), b in zip(loaded.state_dict().items(), source.state_dict().values()):
            assert torch.equal(a, b.half().float()), name


def test_purifier_from_pretrained_purifies_like_the_saved_models(model_folder):
    from videopure_core import DiffusionModels

    folder, unet, vae, embedding = model_folder
    config = PurifyConfig(t_star=2).with_options(lambda_temp=0.0)
    p = Purifier.from_pretrained(str(folder), config=config)
    video = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = p.purify(video)
    assert got.videos.shape == (3, 1, 3, 3, 32, 32)
    saved = DiffusionModels(unet, vae, dict(MODELSCOPE_SCHEDULER_CONFIG), embedding)
    expected = Purifier(saved, None, config).purify(video)
    assert torch.equal(got.latents, expected.latents) and torch.equal(got.videos, expected.videos)


def test_missing_folders_and_files_name_the_path(tmp_path, model_folder):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(ModelNotFoundError, match=str(missing)):
        load_diffusion(missing)
    with pytest.raises(ModelNotFoundError, match="hub downloads are off"):
        load_diffusion("ali-vilab/text-to-video-ms-1.7b")
    folder = model_folder[0]
    (folder / "unet" / "config.json").unlink()
    with pytest.raises(ModelNotFoundError, match=str(folder / "unet")):
        load_diffusion(folder)
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "raft.pth")):
        load_raft("raft_small", tmp_path / "raft.pth")


def test_raft_loads_from_local_state_dict_files(tmp_path):
    torch.manual_seed(0)
    src = load_raft("raft_small", None)
    torch.save(src.state_dict(), tmp_path / "raft_small.pth")
    save_file(src.state_dict(), str(tmp_path / "raft_small.safetensors"))
    a = torch.rand(1, 3, 128, 128) * 2 - 1
    b = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        expected = src(a, b, num_flow_updates=2)[-1]
        for name in ["raft_small.pth", "raft_small.safetensors"]:
            got = load_raft("raft_small", tmp_path / name)(a, b, num_flow_updates=2)[-1]
            assert torch.equal(got, expected)


class Payload:
    """An arbitrary class: unpickling it would run code of the file's choosing."""


def test_weights_are_not_unpickled_freely(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        load_weights(tmp_path / "evil.pth")


def test_torchvision_video_classifier_loads_from_a_local_file(tmp_path):
    from torchvision.models.video import mc3_18

    torch.manual_seed(0)
    src = mc3_18(num_classes=5).eval()
    save_file(src.state_dict(), str(tmp_path / "mc3.safetensors"))
    clf = load_video_classifier("mc3_18", tmp_path / "mc3.safetensors", num_classes=5)
    x = torch.rand(2, 3, 4, 32, 32)
    mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.22803, 0.22145, 0.216989]).view(1, 3, 1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(clf(x), src((x - mean) / std), atol=1e-6)
    with pytest.raises(ValueError, match="Unknown video architecture"):
        load_video_classifier("resnet50", None)
