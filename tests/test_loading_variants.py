"""Loading a diffusion folder as users download it: weight variants, dtype, memory, the cached empty-prompt embedding.

Tiny models of the real classes saved the way ModelScope's fp16 download is laid out (`*.fp16.safetensors` only).
"""

import collections
import json
import os
import shutil
import stat
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import videopure_core.loading as loading
from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, ModelNotFoundError, Purifier, PurifyConfig, load_diffusion
from videopure_core.loading import (
    EMBEDDING_FILE,
    embedding_cache_file,
    embedding_cache_key,
    encode_empty_prompt,
    user_cache_dir,
    weight_file_names,
    weights_variant,
)
from videopure_core.tiny import tiny_unet, tiny_vae

from test_loading import tiny_clip


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """Every test gets its own user cache (never the real ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "videopure" / "embeddings"


def save_fp16_download(folder):
    """unet/, vae/, text_encoder/ with only `*.fp16.safetensors` weights (in fp16), tokenizer/, scheduler/, no
    embedding; returns the fp32 modules rounded through fp16 (what the files hold) and the tokenizer."""
    unet, vae = tiny_unet(0).half(), tiny_vae(1).half()
    unet.save_pretrained(folder / "unet", variant="fp16")
    vae.save_pretrained(folder / "vae", variant="fp16")
    encoder, tokenizer = tiny_clip(folder)
    shutil.rmtree(folder / "text_encoder")
    encoder.half().save_pretrained(folder / "text_encoder", variant="fp16")
    shutil.rmtree(folder / "tok_src")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(MODELSCOPE_SCHEDULER_CONFIG))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "TextToVideoSDPipeline"}))
    return unet.float(), vae.float(), encoder.float(), tokenizer


@pytest.fixture
def fp16_download(tmp_path):
    folder = tmp_path / "text-to-video-ms-1.7b"
    unet, vae, encoder, tokenizer = save_fp16_download(folder)
    return folder, unet, vae, encode_empty_prompt(encoder, tokenizer)


@pytest.fixture
def clip_calls(monkeypatch):
    """Records every CLIPTextModel.from_pretrained call: a weak reference to the model and the dtype of its weights."""
    from transformers import CLIPTextModel

    calls = []
    original = CLIPTextModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        calls.append((weakref.ref(model), {p.dtype for p in model.parameters()}))
        return model

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", classmethod(spy))
    return calls


def forbid_text_encoder(monkeypatch):
    from transformers import CLIPTextModel, CLIPTokenizer

    def fail(*args, **kwargs):
        raise AssertionError("the text encoder was loaded although the embedding is cached")

    monkeypatch.setattr(CLIPTextModel, "from_pretrained", fail)
    monkeypatch.setattr(CLIPTokenizer, "from_pretrained", fail)


def files(folder):
    return sorted(p.name for p in folder.iterdir())


# --- issue 16: the fp16 download with no cached embedding ---------------------------------------------------------


def test_fp16_only_download_loads_on_first_run_without_a_cached_embedding(fp16_download, clip_calls):
    folder, unet, vae, embedding = fp16_download
    assert files(folder / "text_encoder") == ["config.json", "model.fp16.safetensors"]
    assert files(folder / "unet") == ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert not (folder / EMBEDDING_FILE).exists()

    p = Purifier.from_pretrained(str(folder), config=PurifyConfig(t_star=2).with_options(lambda_temp=0.0))
    # the text encoder was read from model.fp16.safetensors into float32: the embedding is the fp32 forward pass of
    # the fp16 weights, bit for bit, and it is now cached next to the model
    assert len(clip_calls) == 1 and clip_calls[0][1] == {torch.float32}
    assert torch.equal(p.models.embedding, embedding) and p.models.embedding.shape == (1, 8, 32)
    assert torch.equal(loading.load_embedding(folder / EMBEDDING_FILE), embedding)
    z = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(p.models.unet(z, 21, encoder_hidden_states=embedding).sample,
                           unet(z, 21, encoder_hidden_states=embedding).sample)


def test_the_text_encoder_is_freed_right_after_computing_the_embedding(fp16_download, clip_calls):
    folder = fp16_download[0]
    m = load_diffusion(folder)
    assert len(clip_calls) == 1
    ref, _ = clip_calls[0]
    assert ref() is None, "the CLIP text encoder is still alive after load_diffusion returned"
    assert m.embedding.shape == (1, 8, 32)


# --- one rule for the weights variant of every component ----------------------------------------------------------


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder"])
def test_one_variant_rule_for_every_component(tmp_path, component):
    plain, fp16 = weight_file_names(component), weight_file_names(component, "fp16")
    stem = "model" if component == "text_encoder" else "diffusion_pytorch_model"
    assert {f"{stem}.safetensors", f"{stem}.safetensors.index.json"} <= set(plain)
    assert {f"{stem}.fp16.safetensors", f"{stem}.safetensors.index.fp16.json"} <= set(fp16)
    bin_stem = "pytorch_model" if component == "text_encoder" else stem
    assert f"{bin_stem}.bin" in plain and f"{bin_stem}.fp16.bin" in fp16

    def folder_with(*names):
        folder = tmp_path / "_".join(names or ("empty",)) / component
        folder.mkdir(parents=True)
        for name in ("config.json",) + names:
            (folder / name).write_text("{}")
        return folder

    for name in plain:  # plain files win, whatever else is there
        assert weights_variant(folder_with(name), component) is None
        assert weights_variant(folder_with(name, fp16[0]), component) is None
    for name in fp16:  # else the fp16 variant
        assert weights_variant(folder_with(name), component) == "fp16"
    empty = folder_with("model.onnx")
    with pytest.raises(ModelNotFoundError) as err:
        weights_variant(empty, component)
    message = str(err.value)
    assert str(empty) in message and "model.onnx" in message  # the folder and what it holds
    assert all(name in message for name in plain + fp16)  # every file name looked for


def test_plain_weights_are_preferred_over_the_fp16_variant(tmp_path):
    folder = tmp_path / "both"
    save_fp16_download(folder)
    torch.manual_seed(5)
    plain = tiny_unet(7)
    plain.save_pretrained(folder / "unet")  # the fp32 weights next to the fp16 ones: a different model on purpose
    loading.save_embedding(torch.zeros(1, 8, 32), folder / EMBEDDING_FILE)
    loaded = load_diffusion(folder).unet
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), plain.state_dict().values()))


def test_missing_weights_and_folders_name_the_component_folder_and_the_files_looked_for(fp16_download):
    folder = fp16_download[0]
    (folder / "text_encoder" / "model.fp16.safetensors").unlink()
    with pytest.raises(ModelNotFoundError) as err:
        load_diffusion(folder)
    message = str(err.value)
    assert str(folder / "text_encoder") in message
    for name in ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"):
        assert name in message
    assert "Put the text_encoder weights" in message

    (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(ModelNotFoundError) as err:  # the UNet is checked before the text encoder is needed
        load_diffusion(folder)
    message = str(err.value)
    assert str(folder / "unet") in message and "diffusion_pytorch_model.fp16.safetensors" in message
    assert "diffusion_pytorch_model.safetensors" in message and "diffusion_pytorch_model.bin" in message

    shutil.rmtree(folder / "vae")
    shutil.rmtree(folder / "unet")
    loading.save_embedding(torch.zeros(1, 8, 32), folder / EMBEDDING_FILE)
    with pytest.raises(ModelNotFoundError, match=f"Missing the unet/ folder.*looked at {folder / 'unet'}"):
        load_diffusion(folder)


def test_a_missing_tokenizer_is_named(fp16_download):
    folder = fp16_download[0]
    shutil.rmtree(folder / "tokenizer")
    with pytest.raises(ModelNotFoundError, match=f"No CLIP tokenizer in {folder / 'tokenizer'}.*vocab.json"):
        load_diffusion(folder)


# --- dtype and memory ---------------------------------------------------------------------------------------------


class Float32Allocations(TorchDispatchMode):
    """Counts the float32 elements every aten op creates on a real (non-meta) device, by op."""

    def __init__(self):
        super().__init__()
        self.by_op = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type != "meta":
                self.by_op[str(func)] += t.numel()
        return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_weights_are_created_directly_in_the_requested_dtype(fp16_download, dtype):
    folder, unet, vae, embedding = fp16_download
    loading.save_embedding(embedding, folder / EMBEDDING_FILE)
    n_params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in vae.parameters())
    with Float32Allocations() as f32:
        m = load_diffusion(folder, dtype=dtype)
    for module, source in ((m.unet, unet), (m.vae, vae)):
        assert {p.dtype for p in module.parameters()} == {dtype}
        for (name, a), b in zip(module.state_dict().items(), source.state_dict().values()):
            assert torch.equal(a, b.to(dtype)), name  # the fp16 file's values, cast once
    assert m.embedding.dtype == torch.float32  # latent arithmetic stays float32 (SPEC)
    created = sum(f32.by_op.values())
    if dtype == torch.float32:
        assert created >= n_params  # the requested float32 weights themselves
    else:  # no float32 model built on the host and then cast (the embedding, 256 floats, is all)
        assert created <= 1000, f32.by_op.most_common(5)


def test_a_float32_copy_would_be_seen(fp16_download):
    """The counter above does see the wasteful path (build in float32, cast afterwards)."""
    from diffusers import UNet3DConditionModel

    folder, unet = fp16_download[0], fp16_download[1]
    with Float32Allocations() as f32:
        UNet3DConditionModel.from_pretrained(folder / "unet", variant="fp16", torch_dtype=torch.float32).half()
    assert sum(f32.by_op.values()) >= sum(p.numel() for p in unet.parameters())


def test_accelerate_is_installed_and_used():
    import accelerate  # noqa: F401  (a dependency in pyproject.toml: missing, this test fails instead of skipping)
    assert loading.diffusers_load_kwargs(torch.float16) == {"torch_dtype": torch.float16, "low_cpu_mem_usage": True}
    kwargs = loading.transformers_load_kwargs(torch.float32)
    assert kwargs["low_cpu_mem_usage"] is True and torch.float32 in kwargs.values()


# --- the empty-prompt embedding: computed once ever ---------------------------------------------------------------


def test_writable_folder_caches_the_embedding_beside_the_model(fp16_download, user_cache, monkeypatch):
    folder, _, _, embedding = fp16_download
    load_diffusion(folder)
    assert torch.equal(loading.load_embedding(folder / EMBEDDING_FILE), embedding)
    assert not user_cache.exists()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    forbid_text_encoder(monkeypatch)
    assert torch.equal(load_diffusion(folder).embedding, embedding)


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only; as root (who writes anyway) refuse writes there the way the OS would for others."""
    made = []

    def make(folder):
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                made.append((path, path.stat().st_mode))
                path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        if os.geteuid() == 0:
            save_file = loading.save_file

            def refuse(tensors, filename, metadata=None):
                if str(filename).startswith(str(folder)):
                    raise PermissionError(13, "Permission denied", filename)
                return save_file(tensors, filename, metadata=metadata)

            monkeypatch.setattr(loading, "save_file", refuse)

    yield make
    for path, mode in made:
        path.chmod(mode)


@pytest.mark.parametrize("where", ["read-only folder", "hugging face cache"])
def test_embedding_goes_to_the_user_cache_when_the_model_folder_is_not_ours(tmp_path, user_cache, read_only,
                                                                         monkeypatch, where):
    if where == "read-only folder":
        folder = tmp_path / "shared-store" / "text-to-video-ms-1.7b"
    else:
        folder = tmp_path / "hub" / "models--ali-vilab--text-to-video-ms-1.7b" / "snapshots" / "0123abcd"
    unet, vae, encoder, tokenizer = save_fp16_download(folder)
    embedding = encode_empty_prompt(encoder, tokenizer)
    if where == "read-only folder":
        read_only(folder)
    load_diffusion(folder)
    assert not (folder / EMBEDDING_FILE).exists()
    cached = embedding_cache_file(folder)
    assert cached.parent == user_cache and cached.name == f"{embedding_cache_key(folder)}.safetensors"
    assert files(user_cache) == [cached.name]
    assert torch.equal(loading.load_embedding(cached), embedding)
    assert user_cache_dir() == tmp_path / "xdg-cache" / "videopure"

    forbid_text_encoder(monkeypatch)  # the second load never touches the text encoder
    assert torch.equal(load_diffusion(folder, dtype=torch.float16).embedding, embedding)


def test_the_cache_key_follows_the_text_encoder_and_tokenizer_not_the_path(tmp_path):
    a = tmp_path / "a"
    save_fp16_download(a)
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert embedding_cache_key(a) == embedding_cache_key(b)  # the same model at another path shares the cache

    config = json.loads((b / "text_encoder" / "config.json").read_text())
    (b / "text_encoder" / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert embedding_cache_key(a) != embedding_cache_key(b)
    shutil.rmtree(b)
    shutil.copytree(a, b)
    with open(b / "text_encoder" / "model.fp16.safetensors", "ab") as f:
        f.write(b" ")  # other weights (size)
    assert embedding_cache_key(a) != embedding_cache_key(b)
    shutil.rmtree(b)
    shutil.copytree(a, b)
    tok = json.loads((b / "tokenizer" / "tokenizer_config.json").read_text())
    (b / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**tok, "model_max_length": 77}))
    assert embedding_cache_key(a) != embedding_cache_key(b)


def test_uncacheable_embedding_warns_and_still_loads(fp16_download, read_only, tmp_path, monkeypatch):
    folder, _, _, embedding = fp16_download
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / "cache"))  # inside the read-only folder too
    read_only(folder)
    with pytest.warns(UserWarning, match="Could not cache the empty-prompt embedding"):
        m = load_diffusion(folder)
    assert torch.equal(m.embedding, embedding)
