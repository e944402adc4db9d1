"""The full-size ModelScope text-to-video 1.7B architecture, as configs, for benchmarks, FLOP counts and a full-size
folder with random weights saved as users download the model (`save_modelscope_folder`).

The values are those of the published diffusers configs of `ali-vilab/text-to-video-ms-1.7b` (formerly
`damo-vilab/...`): `unet/config.json` (UNet3DConditionModel, 1.4B parameters), `vae/config.json` (the Stable
Diffusion AutoencoderKL, run per frame), the CLIP text encoder's output `(1, 77, 1024)`, and torchvision's RAFT-large
for the optical flow. No weights are involved: `build_*` give randomly initialised modules (timing and FLOPs do
not depend on weight values), on any device including "meta" (shapes only, for FLOP counting).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

MODELSCOPE_UNET_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    sample_size=32,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=1024,
    attention_head_dim=64,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
)

MODELSCOPE_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    scaling_factor=0.18215,
)

MODELSCOPE_EMBEDDING_SHAPE = (1, 77, 1024)  # CLIP ViT-H text encoder: 77 tokens x 1024 (the empty prompt)
MODELSCOPE_RAFT = "raft_large"  # torchvision raft_large (C_T_V1 weights in real use)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Build parameters directly in `dtype` (no float32 copy first; converting afterwards also fails on fake tensors)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_unet(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, config: dict | None = None) -> nn.Module:
    """A randomly initialised UNet3DConditionModel of the ModelScope configuration (or `config`), eval, no grad."""
    from diffusers import UNet3DConditionModel

    with torch.device(device), _default_dtype(dtype):
        unet = UNet3DConditionModel(**(config or MODELSCOPE_UNET_CONFIG))
    return unet.eval().requires_grad_(False)


def build_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, config: dict | None = None) -> nn.Module:
    """A randomly initialised AutoencoderKL of the ModelScope configuration (or `config`), eval, no grad."""
    from diffusers import AutoencoderKL

    with torch.device(device), _default_dtype(dtype):
        vae = AutoencoderKL(**(config or MODELSCOPE_VAE_CONFIG))
    return vae.eval().requires_grad_(False)


def build_raft(device: str | torch.device = "cpu", arch: str = MODELSCOPE_RAFT) -> nn.Module:
    """A randomly initialised torchvision RAFT (`raft_large` by default), eval, no grad."""
    from torchvision.models.optical_flow import raft_large, raft_small

    builder = {"raft_large": raft_large, "raft_small": raft_small}[arch]
    with torch.device(device):
        model = builder(weights=None, progress=False)
    return model.eval().requires_grad_(False)


def random_embedding(shape: tuple[int, ...] = MODELSCOPE_EMBEDDING_SHAPE, device: str | torch.device = "cpu", seed: int = 0):
    """A fixed N(0,1) stand-in for the empty-prompt embedding (timing does not depend on its values)."""
    if str(device) == "meta":
        return torch.empty(shape, device="meta")
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)


# --- a full-size folder laid out as users download it (random weights) -------------------------------------------

MODELSCOPE_TEXT_ENCODER_CONFIG = dict(  # OpenCLIP ViT-H/14's text tower as transformers' CLIPTextModel
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

MODEL_INDEX = {
    "_class_name": "TextToVideoSDPipeline",
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet3DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# torchvision's file names for the weights the paper's models use (what users download and put next to the model)
RAFT_LARGE_FILE = "raft_large_C_T_V1-22a6c225.pth"
R3D_18_FILE = "r3d_18-b3b3357e.pth"

_TOKENIZER_CORPUS = (
    "a video of a person boxing with a speed bag . a person cliff diving into the sea . "
    "the quick brown fox jumps over the lazy dog . people playing basketball , tennis and the guitar ."
)


def _byte_symbols() -> list[str]:
    """CLIP's byte-level alphabet: the 256 bytes as printable characters, in CLIP's order (printable ASCII and
    Latin-1 first, the rest shifted above 255)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def small_clip_bpe(merges: int = 200) -> tuple[dict[str, int], list[str]]:
    """A small but valid CLIP BPE vocabulary (vocab, merges), made here: CLIP's 256 byte symbols and their
    end-of-word forms, `merges` merges learnt from a one-line corpus, then <|startoftext|> and <|endoftext|>, in the
    order of CLIP's own vocab.json (whose 49408 entries come from OpenAI's training data, not needed to load)."""
    symbols = _byte_symbols()
    vocab_list = symbols + [s + "</w>" for s in symbols]
    words: dict[tuple[str, ...], int] = {}
    for word in _TOKENIZER_CORPUS.split():
        key = tuple(word[:-1]) + (word[-1] + "</w>",)
        words[key] = words.get(key, 0) + 1
    learnt = []
    for _ in range(merges):
        pairs: dict[tuple[str, str], int] = {}
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        learnt.append(f"{best[0]} {best[1]}")
        vocab_list.append(best[0] + best[1])
        merged = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = n
        words = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab_list)}, learnt


def save_tokenizer(folder) -> None:
    """tokenizer/ as in the ModelScope download (vocab.json, merges.txt, special_tokens_map.json,
    tokenizer_config.json), with the small vocabulary of `small_clip_bpe`; padding with "!" as OpenCLIP pads."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = small_clip_bpe()
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


TINY_TEXT_ENCODER_CONFIG = dict(MODELSCOPE_TEXT_ENCODER_CONFIG, hidden_size=32, intermediate_size=37,
                                num_hidden_layers=2, num_attention_heads=4, projection_dim=32)


def save_modelscope_folder(root, variant: str | None = "fp16", seed: int = 0, tiny: bool = False, log=print) -> dict:
    """The paper's models at full size with random weights, saved as users get them, into `root`:

        root/text-to-video-ms-1.7b/   model_index.json, scheduler/, unet/, vae/, text_encoder/ (weights as
                                      `*.fp16.safetensors`, the download's fp16 variant), tokenizer/
        root/raft_large_C_T_V1-22a6c225.pth    torchvision RAFT-large state dict (random)
        root/r3d_18-b3b3357e.pth                torchvision r3d_18 Kinetics-400 state dict (random)

    Each network is built directly in the variant's dtype, saved and freed before the next (peak: the UNet, 2.6 GiB
    in fp16). Random weights: every code path and every cost is real, the votes mean nothing. `tiny=True` saves
    the same layout with tiny UNet, VAE and text encoder (videopure_core.tiny; seconds, for tests). Returns
    {"model": path, "raft": path, "classifier": path, "seconds": {...}, "bytes": {...}}."""
    import gc
    import json
    import time
    from pathlib import Path

    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from .classifiers import build_torchvision_classifier
    from .schedule import MODELSCOPE_SCHEDULER_CONFIG

    root = Path(root)
    model = root / "text-to-video-ms-1.7b"
    dtype = torch.float16 if variant == "fp16" else torch.float32
    seconds, sizes = {}, {}
    model.mkdir(parents=True, exist_ok=True)

    def timed(name, fn):
        start = time.perf_counter()
        torch.manual_seed(seed)
        fn()
        gc.collect()
        seconds[name] = round(time.perf_counter() - start, 1)
        files = [p for p in (model / name).rglob("*") if p.is_file()] if (model / name).is_dir() else []
        sizes[name] = sum(p.stat().st_size for p in files)
        log(f"  {name}: {seconds[name]} s, {sizes[name] / 2**30:.2f} GiB")

    from .tiny import TINY_UNET_CONFIG, TINY_VAE_CONFIG

    unet_config, vae_config = (TINY_UNET_CONFIG, TINY_VAE_CONFIG) if tiny else (None, None)
    text_config = TINY_TEXT_ENCODER_CONFIG if tiny else MODELSCOPE_TEXT_ENCODER_CONFIG
    timed("unet", lambda: build_unet("cpu", dtype, unet_config).save_pretrained(model / "unet", variant=variant))
    timed("vae", lambda: build_vae("cpu", dtype, vae_config).save_pretrained(model / "vae", variant=variant))

    def text_encoder():
        with _default_dtype(dtype):
            encoder = CLIPTextModel(CLIPTextConfig(**text_config)).eval()
        encoder.save_pretrained(model / "text_encoder", variant=variant)

    timed("text_encoder", text_encoder)
    save_tokenizer(model / "tokenizer")
    DDIMScheduler(**{k: v for k, v in MODELSCOPE_SCHEDULER_CONFIG.items() if not k.startswith("_")}).save_config(
        model / "scheduler")
    import diffusers

    (model / "model_index.json").write_text(json.dumps({**MODEL_INDEX, "_diffusers_version": diffusers.__version__},
                                                       indent=2))
    torch.manual_seed(seed)
    torch.save(build_raft("cpu").state_dict(), root / RAFT_LARGE_FILE)
    torch.save(build_torchvision_classifier("r3d_18", 400).model.state_dict(), root / R3D_18_FILE)
    sizes["raft"], sizes["classifier"] = (root / RAFT_LARGE_FILE).stat().st_size, (root / R3D_18_FILE).stat().st_size
    return {"model": str(model), "raft": str(root / RAFT_LARGE_FILE), "classifier": str(root / R3D_18_FILE),
            "seconds": seconds, "bytes": sizes}
