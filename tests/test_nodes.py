"""The ComfyUI node pack, called directly (as ComfyUI calls it: inside torch.inference_mode()) with small
stand-ins for ComfyUI's modules (tests/comfy_stub.py) and tiny random models."""

import inspect
import subprocess
import sys

import pytest
import torch

import comfy_stub
from conftest import constant_flow_fn
from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, DiffusionModels, Purifier, PurifyConfig, VideoInputError
from videopure_core import from_frames, to_frames
from videopure_core.attacks import classifier_grad_fn
from videopure_core.classifiers import classify
from videopure_core.flow import video_flow
from videopure_core.pipeline import Candidates
from videopure_core.vae import decode_latents, encode_video
from videopure_core.world.generator import CLASSES, SPLIT_SEEDS, WorldSpec, make_clip
from videopure_core.world.models import WEIGHTS, WorldClassifier

GUIDANCE = dict(guidance=True, alpha_s=-4.0, lambda_temp=5.0, lambda_spa=800.0, guidance_reference="",
                variance_weight="log", guide_trajectory=False, final_candidate="release", warp_grad=False)

# Widget names per node in their saved order. Saved workflows store widget values by position: a node may only
# ever append widgets, so each list here must stay a prefix of the node's widgets.
FROZEN_WIDGETS = {
    "VideoPureDiffusionLoader": ["model", "dtype", "keep_loaded"],
    "VideoPureRAFTLoader": ["weights", "arch", "keep_loaded"],
    "VideoPureClassifierLoader": ["weights", "arch", "num_classes", "keep_loaded"],
    "VideoPureWorldClip": ["split", "index", "frames"],
    "VideoPureFitVideo": ["size", "max_frames"],
    "VideoPureVAEEncode": ["chunk"],
    "VideoPureTemporalInversion": ["t_star", "ddim_steps", "temporal", "noise_frame"],
    "VideoPureRAFTFlow": ["iters", "input_range", "bidirectional", "occlusion_mask", "chunk"],
    "VideoPureGuidedDenoiseStep": list(GUIDANCE),
    "VideoPureGuidedDenoise": list(GUIDANCE),
    "VideoPureCandidateDecode": ["candidate", "chunk"],
    "VideoPurePurify": ["t_star", "temporal", "guidance", "alpha_s", "lambda_temp", "lambda_spa", "guidance_reference",
                        "raft_iters", "raft_input_range", "candidate", "chunk"],
    "VideoPureClassifierVote": ["batch_size"],
    "VideoPureClassify": ["top_k"],
    "VideoPureFlowImage": [],
    "VideoPurePGDAttack": ["label", "epsilon", "step_size", "steps", "norm", "random_start", "start_seed"],
    "VideoPureSelectCandidate": ["candidate"],
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(node classes, pack module types, stub state) with the stand-ins installed for the whole module."""
    models = tmp_path_factory.mktemp("models")
    with comfy_stub.installed(models) as state:
        pack = comfy_stub.load_pack()
        yield pack.NODE_CLASS_MAPPINGS, sys.modules[comfy_stub.PACK_MODULE + ".nodes.types"], state


@pytest.fixture
def nodes(env):
    mapping, _, state = env
    state.interrupt, state.progress[:] = False, []
    return {name[len("VideoPure"):]: cls() for name, cls in mapping.items()}


@pytest.fixture(scope="module")
def handles(env, tiny_models):
    _, types, _ = env
    unet, vae, emb = tiny_models
    torch.manual_seed(0)
    classifier = WorldClassifier(num_classes=12, width=4).eval().requires_grad_(False)
    return (types.DiffusionModel(DiffusionModels(unet, vae, MODELSCOPE_SCHEDULER_CONFIG, emb)),
            types.FlowModel(constant_flow_fn(1.0, 0.0)),
            types.VideoClassifier(classifier, CLASSES, None))


@pytest.fixture
def images():
    return torch.rand(4, 32, 32, 3, generator=torch.Generator().manual_seed(0))


def _widgets(cls):
    from workflows.graph import is_widget, node_info, ordered_inputs

    return [n for n, _, s in ordered_inputs(node_info("x", cls)) if is_widget(s)]


def _chain(nodes, model, raft, images, t_star=6, flow_options=(False, False), **guidance):
    (latent,) = nodes["VAEEncode"].encode(model, images, 16)
    (inverted,) = nodes["TemporalInversion"].invert(model, latent, t_star, 50, True, 0)
    (flow,) = nodes["RAFTFlow"].flow(raft, images, latent, 10, "-1,1", *flow_options, 16)
    state, candidates = inverted, None
    for _ in range(t_star):
        state, candidates = nodes["GuidedDenoiseStep"].step(model, state, **{**GUIDANCE, **guidance}, flow=flow)
    return latent, inverted, flow, state, candidates


# --- registration ---------------------------------------------------------------------------------------------


def test_every_node_is_registered_prefixed_categorised_and_callable(env):
    mapping, _, _ = env
    pack = sys.modules[comfy_stub.PACK_MODULE]
    assert set(mapping) == set(FROZEN_WIDGETS)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(mapping)
    produced = {t for cls in mapping.values() for t in cls.RETURN_TYPES}
    for name, cls in mapping.items():
        assert name.startswith("VideoPure") and pack.NODE_DISPLAY_NAME_MAPPINGS[name].startswith("VideoPure")
        assert cls.CATEGORY == "VideoPure" or cls.CATEGORY.startswith("VideoPure/"), name
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES), name
        spec = cls.INPUT_TYPES()
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        names = [n for kind in ("required", "optional") for n in spec.get(kind, {})]
        assert [p for p in params if p != "self"] == names, f"{name}: function arguments differ from its inputs"
        for kind in ("optional",):
            for n in spec.get(kind, {}):
                assert params[n].default is None, f"{name}: optional input {n} needs a default"
        custom = {t for k in spec.values() for s in k.values()
                  if isinstance(s[0], str) and s[0].startswith("VIDEOPURE") for t in s[0].split(",")}
        assert custom - {"OPTICAL_FLOW"} <= produced, f"{name} takes types no node makes: {custom - produced}"


@pytest.mark.parametrize("name", sorted(FROZEN_WIDGETS))
def test_every_input_and_output_has_a_tooltip_and_the_node_has_search_aliases(env, name):
    cls = env[0][name]
    spec = cls.INPUT_TYPES()
    for kind in ("required", "optional"):
        for input_name, s in spec.get(kind, {}).items():
            tooltip = (s[1] if len(s) > 1 else {}).get("tooltip", "")
            assert len(tooltip) > 10, f"{name}.{input_name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(len(t) > 10 for t in cls.OUTPUT_TOOLTIPS)
    assert cls.SEARCH_ALIASES and all(isinstance(a, str) and a for a in cls.SEARCH_ALIASES)


@pytest.mark.parametrize("name", sorted(FROZEN_WIDGETS))
def test_widgets_are_only_ever_appended(env, name):
    mapping, _, _ = env
    widgets = _widgets(mapping[name])
    assert widgets[: len(FROZEN_WIDGETS[name])] == FROZEN_WIDGETS[name]


def test_outside_comfyui_the_pack_registers_and_imports_nothing():
    # pytest itself imports the repository root's __init__.py (it is a package) before any test runs
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('pack', sys.argv[1], "
            "submodule_search_locations=[]); m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(m.NODE_CLASS_MAPPINGS, 'videopure_core' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(comfy_stub.REPO / "__init__.py")], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["{}", "False", "False"]


def test_model_folders_are_registered_under_comfyuis_models_dir(env):
    import folder_paths

    _, _, state = env
    for name in ("videopure", "videopure_raft", "videopure_classifiers"):
        assert folder_paths.get_folder_paths(name)[-1] == f"{state.models_dir}/{name}"


# --- the composable graph reproduces the library --------------------------------------------------------------

VARIANTS = {
    "release": ({}, dict(), (False, False)),
    "options": (dict(guide_trajectory=True, final_candidate="clean", variance_weight="linear", warp_grad=True,
                     guidance_reference="32,28,28", lambda_temp=50.0),
                dict(guide_trajectory=True, final_candidate="clean", variance_weight="linear", warp_grad=True,
                     lambda_reference=(32, 28, 28), lambda_temp=50.0, bidirectional=True, occlusion_mask=True),
                (True, True)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chained_guided_steps_give_exactly_the_candidates_of_purifier_purify(nodes, handles, images, variant):
    node_options, config_options, flow_options = VARIANTS[variant]
    model, raft, _ = handles
    reference = Purifier(model.models, constant_flow_fn(1.0, 0.0),
                         PurifyConfig().with_options(**config_options)).purify(from_frames(images))
    with torch.inference_mode():
        _, _, _, state, candidates = _chain(nodes, model, raft, images, 6, flow_options, **node_options)
        decoded, frames, all_frames = nodes["CandidateDecode"].decode(model, candidates, -1, 16)
    assert candidates.labels == reference.labels == (6, 5, 4, 3, 2, 1, 0)
    assert torch.equal(candidates.latents, reference.latents)
    assert torch.equal(decoded.videos, reference.videos)
    assert torch.equal(frames, to_frames(reference.videos[-1, 0]))  # z_0^0 as an IMAGE batch (F, H, W, 3)
    assert all_frames.shape == (7 * 4, 32, 32, 3) and torch.equal(all_frames[4:8], to_frames(reference.videos[1, 0]))
    assert state.t == -1 and "finished" in state.describe()


def test_guided_denoise_all_steps_equals_the_chain(nodes, handles, images):
    model, raft, _ = handles
    with torch.inference_mode():
        _, inverted, flow, _, chained = _chain(nodes, model, raft, images, 3)
        (all_at_once,) = nodes["GuidedDenoise"].denoise(model, inverted, **GUIDANCE, flow=flow)
    assert all_at_once.labels == chained.labels == (3, 2, 1, 0)
    assert torch.equal(all_at_once.latents, chained.latents)


def test_partial_chain_can_be_decoded_and_each_step_adds_its_candidate(nodes, handles, images):
    model, raft, _ = handles
    with torch.inference_mode():
        (latent,) = nodes["VAEEncode"].encode(model, images, 16)
        (state,) = nodes["TemporalInversion"].invert(model, latent, 6, 50, True, 0)
        (flow,) = nodes["RAFTFlow"].flow(raft, images, latent, 10, "-1,1", False, False, 16)
        seen = []
        for _ in range(2):
            state, candidates = nodes["GuidedDenoiseStep"].step(model, state, **GUIDANCE, flow=flow)
            seen.append(state.t)
        _, frames, _ = nodes["CandidateDecode"].decode(model, candidates, 5, 16)
        _, last, _ = nodes["CandidateDecode"].decode(model, candidates, -1, 16)
    assert seen == [81, 61] and candidates.labels == (6, 5)
    assert torch.equal(frames, last)  # z_0^5 is the last one made so far
    with pytest.raises(ValueError, match="z_0"):
        nodes["CandidateDecode"].decode(model, candidates, 0, 16)
    with pytest.raises(ValueError, match="from the top"):
        nodes["GuidedDenoise"].denoise(model, state, **GUIDANCE, flow=flow)


def test_purify_node_equals_purifier_predict(nodes, handles, images):
    model, raft, classifier = handles
    config = PurifyConfig().with_options(lambda_reference=(32, 28, 28))
    purifier = Purifier(model.models, constant_flow_fn(1.0, 0.0), config)
    video = from_frames(images)
    expected = purifier.predict(video, classifier.model)
    with torch.inference_mode():
        out = nodes["Purify"].purify(model, images, 6, True, True, -4.0, 5.0, 800.0, "32,28,28", 10, "-1,1", 0, 16,
                                     raft, classifier)
    purified, all_candidates, table, winner, candidates = out["result"]
    assert table == expected.table(CLASSES) and out["ui"]["text"] == [table]
    assert winner == int(expected.winner[0])
    assert torch.equal(candidates.latents, purifier.purify(video).latents)
    assert torch.equal(purified, to_frames(candidates.videos[-1, 0])) and all_candidates.shape == (28, 32, 32, 3)
    with torch.inference_mode():
        (decoded, _, _) = nodes["CandidateDecode"].decode(model, _chain(nodes, model, raft, images, 6,
                                                                      guidance_reference="32,28,28")[4], -1, 16)
        vote = nodes["ClassifierVote"].vote(classifier, decoded, 8)
    assert vote["ui"]["text"] == [table] and vote["result"] == (table, winner, CLASSES[winner])


# --- bad inputs give errors that name the fix -------------------------------------------------------------------


def test_step_order_errors_name_the_fix(nodes, handles, images):
    model, raft, _ = handles
    with torch.inference_mode():
        latent, inverted, flow, finished, _ = _chain(nodes, model, raft, images, 2)
        with pytest.raises(ValueError, match="chain exactly 2 Guided Denoise Steps"):
            nodes["GuidedDenoiseStep"].step(model, finished, **GUIDANCE, flow=flow)
        with pytest.raises(ValueError, match="Temporal DDIM\\s+Inversion between VAE Encode"):
            nodes["GuidedDenoiseStep"].step(model, latent, **GUIDANCE, flow=flow)
        with pytest.raises(ValueError, match="connect the output of VideoPure VAE Encode"):
            nodes["TemporalInversion"].invert(model, inverted, 6, 50, True, 0)
        with pytest.raises(ValueError, match="RAFT\\s+Flow node to the 'flow' input, or set lambda_temp to 0"):
            nodes["GuidedDenoiseStep"].step(model, inverted, **GUIDANCE, flow=None)
        # lambda_temp = 0 (or no guidance) needs no flow
        state, cands = nodes["GuidedDenoiseStep"].step(model, inverted, **{**GUIDANCE, "lambda_temp": 0.0}, flow=None)
        assert cands.labels == (2,)
        (short,) = nodes["VAEEncode"].encode(model, images[:3], 16)
        (other_flow,) = nodes["RAFTFlow"].flow(raft, images[:3], short, 10, "-1,1", False, False, 16)
        with pytest.raises(ValueError, match="different video: 3 frames.*4 frames"):
            nodes["GuidedDenoiseStep"].step(model, inverted, **GUIDANCE, flow=other_flow)
        with pytest.raises(ValueError, match="same IMAGE batch"):
            nodes["RAFTFlow"].flow(raft, images[:3], latent, 10, "-1,1", False, False, 16)
        with pytest.raises(ValueError, match="guidance_reference '32,28'"):
            nodes["GuidedDenoiseStep"].step(model, inverted, **{**GUIDANCE, "guidance_reference": "32,28"}, flow=flow)


def test_bad_frames_give_errors_that_name_the_fix(nodes, handles, images):
    model, raft, classifier = handles
    with torch.inference_mode():
        with pytest.raises(VideoInputError, match="1 frame.*at least 2.*Pass more frames"):
            nodes["VAEEncode"].encode(model, images[:1], 16)
        with pytest.raises(VideoInputError, match="divisible by 8.*32x24"):
            nodes["Purify"].purify(model, images[:, :, :30], 6, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 16,
                                   raft, None)
        with pytest.raises(ValueError, match="connect a VideoPure RAFT Loader"):
            nodes["Purify"].purify(model, images, 6, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 16, None, None)
        fixed = type(classifier)(classifier.model, CLASSES, frames=16)
        with pytest.raises(ValueError, match="exactly 16 frames; this video has 4.*max_frames=16"):
            nodes["Classify"].classify(fixed, images, 3)


def test_loaders_name_the_expected_path_of_a_missing_model(nodes, env):
    _, _, state = env
    with torch.inference_mode():
        with pytest.raises(FileNotFoundError, match=f"at {state.models_dir}/videopure/text-to-video-ms-1.7b"):
            nodes["DiffusionLoader"].load("text-to-video-ms-1.7b", "auto", False)
        with pytest.raises(FileNotFoundError, match=f"{state.models_dir}/videopure_raft/raft.pth.*raft_large_C_T_V1"):
            nodes["RAFTLoader"].load("raft.pth", "raft_large", False)
        with pytest.raises(FileNotFoundError, match=f"{state.models_dir}/videopure_classifiers/r3d.pth.*r3d_18-"):
            nodes["ClassifierLoader"].load("r3d.pth", "r3d_18", 400, False)


def test_diffusers_folder_is_listed_and_loads_outside_inference_mode(env, nodes, tiny_models):
    from videopure_core.loading import save_embedding

    mapping, types, state = env
    unet, vae, emb = tiny_models
    folder = f"{state.models_dir}/videopure/tiny-t2v"
    unet.save_pretrained(f"{folder}/unet")
    vae.save_pretrained(f"{folder}/vae")
    from diffusers import DDIMScheduler

    DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG).save_pretrained(f"{folder}/scheduler")
    save_embedding(emb, f"{folder}/empty_prompt.safetensors")
    listed = mapping["VideoPureDiffusionLoader"].INPUT_TYPES()["required"]["model"][0]
    assert listed == ["bundled: small world", "tiny-t2v"]
    with torch.inference_mode():
        (model,) = nodes["DiffusionLoader"].load("tiny-t2v", "float16", False)  # float16 is GPU-only: CPU -> fp32
    m = model.models
    params = list(m.unet.parameters()) + list(m.vae.parameters())
    assert not any(p.is_inference() for p in params) and model.dtype == torch.float32
    assert torch.equal(next(m.unet.parameters()), next(unet.parameters()))
    assert torch.equal(m.embedding, emb)


@pytest.mark.skipif(not (WEIGHTS / "classifier" / "config.json").is_file(), reason="bundled world weights not present")
def test_bundled_world_loads_outside_inference_mode_and_can_be_attacked(nodes):
    with torch.inference_mode():
        (classifier,) = nodes["ClassifierLoader"].load("bundled: small world", "r3d_18", 400, False)
        (raft,) = nodes["RAFTLoader"].load("bundled: small world", "raft_large", False)
        images, label, name = nodes["WorldClip"].clip("test", 5, 4)
        adversarial, _, report = nodes["PGDAttack"].attack(classifier, images, label, 4.0, 2.0, 2, "linf", True, 0)
    assert classifier.classes == CLASSES and name == CLASSES[5]
    assert not any(p.is_inference() for m in (classifier.model, raft.raft) for p in m.parameters())
    assert float((adversarial - images).abs().max()) <= 4 / 255 + 1e-6 and "attacking class square-right" in report


# --- ComfyUI plumbing: dtype, offloading, progress, interruption ---------------------------------------------


def test_half_precision_only_on_a_gpu(env, monkeypatch):
    bridge = sys.modules[comfy_stub.PACK_MODULE + ".nodes.bridge"]
    import comfy.model_management as mm

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert [bridge.network_dtype(c, cpu) for c in ("auto", "float16", "bfloat16")] == [torch.float32] * 3
    assert bridge.network_dtype("float16", gpu) == torch.float16
    monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **kw: True)
    assert bridge.network_dtype("auto", gpu) == torch.bfloat16
    monkeypatch.setattr(mm, "should_use_bf16", lambda device=None, **kw: False)
    monkeypatch.setattr(mm, "should_use_fp16", lambda device=None, **kw: True)
    assert bridge.network_dtype("auto", gpu) == torch.float16


def test_networks_load_through_comfyuis_model_management_outside_inference_mode(env, handles):
    _, types, state = env
    model, _, classifier = handles
    state.loads.clear(), state.load_modes.clear()
    with torch.inference_mode():
        with model.on_device() as device, classifier.on_device():
            assert device == torch.device("cpu")
    assert [tuple(type(m).__name__ for m in load) for load in state.loads] == [("ModelPatcher",)] * 2
    assert state.loads[0][0] is model.patcher and state.load_modes == [False, False]
    assert model.patcher.model.unet is model.models.unet and model.patcher.model.vae is model.models.vae
    assert classifier.patcher.model.classifier is classifier.model


def test_a_model_comfyui_moved_in_inference_mode_comes_back_usable_by_autograd(env):
    _, types, state = env
    torch.manual_seed(0)
    handle = types.VideoClassifier(WorldClassifier(12, 4).eval())
    with torch.inference_mode():  # ComfyUI evicting it while another node runs: new tensors are inference tensors
        handle.patcher.model.to(torch.float64).to(torch.float32)
    assert all(p.is_inference() for p in handle.model.parameters())
    with torch.inference_mode(), handle.on_device():
        assert not any(t.is_inference() for t in list(handle.model.parameters()) + list(handle.model.buffers()))
        _, grad = classifier_grad_fn(handle.model)(torch.rand(1, 3, 4, 32, 32), torch.tensor([1]))
    assert float(grad.abs().sum()) > 0


def test_progress_reaches_the_bar_and_cancel_interrupts_every_loop(nodes, env, handles, images):
    _, _, state = env
    model, raft, _ = handles
    with torch.inference_mode():
        nodes["VAEEncode"].encode(model, images, 1)
        assert state.progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
        state.progress.clear()
        nodes["Purify"].purify(model, images, 2, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 1, raft, None)
        values = [v for v, _ in state.progress]
        assert values == sorted(values) and state.progress[-1][0] == state.progress[-1][1]
        for stage in ("VAEEncode", "Purify"):
            state.interrupt = True
            with pytest.raises(comfy_stub.InterruptProcessingException):
                if stage == "VAEEncode":
                    nodes["VAEEncode"].encode(model, images, 1)
                else:
                    nodes["Purify"].purify(model, images, 2, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 16,
                                           raft, None)


def test_core_stages_report_every_chunk(tiny_models, images):
    _, vae, _ = tiny_models
    x = images.permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, 4, 32, 32)
    calls = []
    z = encode_video(vae, x, 3, lambda *a: calls.append(a))
    decode_latents(vae, z, 2, lambda *a: calls.append(a))
    video_flow(constant_flow_fn(), x, 2, backward=True, callback=lambda *a: calls.append(a))
    classify(WorldClassifier(12, 4), x.repeat(3, 1, 1, 1, 1), 2, lambda *a: calls.append(a))
    assert calls == [("encode", 1, 2), ("encode", 2, 2), ("decode", 1, 2), ("decode", 2, 2),
                     ("flow", 1, 4), ("flow", 2, 4), ("flow", 3, 4), ("flow", 4, 4),
                     ("classify", 1, 2), ("classify", 2, 2)]


# --- sources and pictures --------------------------------------------------------------------------------------


def test_world_clip_is_the_generators_clip(nodes):
    images, label, name = nodes["WorldClip"].clip("test", 14, 6)
    expected = make_clip(2, SPLIT_SEEDS["test"] + 14, WorldSpec(frames=6))
    assert (label, name) == (2, "disk-up") and torch.equal(images, expected.video)


def test_fit_video_keeps_frames_and_rounds_sizes_to_multiples_of_8(nodes):
    frames = torch.rand(5, 30, 21, 3)
    (fitted,) = nodes["FitVideo"].fit(frames, 0, 3)
    (resized,) = nodes["FitVideo"].fit(frames, 16, 0)
    assert fitted.shape == (3, 24, 16, 3) and resized.shape == (5, 16, 16, 3)


def test_flow_image_colours_a_uniform_flow_uniformly(env, nodes, handles, images):
    _, types, _ = env
    model, _, _ = handles
    pictures = []
    with torch.inference_mode():
        (latent,) = nodes["VAEEncode"].encode(model, images, 16)
        for dx, dy in ((2.0, 0.0), (0.0, -2.0)):
            raft = types.FlowModel(constant_flow_fn(dx, dy))
            (flow,) = nodes["RAFTFlow"].flow(raft, images, latent, 10, "-1,1", False, False, 16)
            pictures.append(nodes["FlowImage"].render(flow)[0])
    right, up = pictures
    assert right.shape == (3, 32, 32, 3)
    assert float((right - right[0, 0, 0]).abs().max()) < 1e-6  # one colour everywhere
    assert float((right[0, 0, 0] - up[0, 0, 0]).abs().max()) > 0.2  # another one for another direction


def test_pgd_node_stays_in_the_ball_and_raises_the_loss_inside_inference_mode(nodes, handles, images):
    _, _, classifier = handles
    with torch.inference_mode():
        adversarial, perturbation, report = nodes["PGDAttack"].attack(classifier, images, -1, 8.0, 2.0, 5, "linf",
                                                                      False, 0)
        again = nodes["PGDAttack"].attack(classifier, images, -1, 8.0, 2.0, 5, "linf", False, 0)[0]
    delta = adversarial - images
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6 and float(delta.abs().max()) > 4 / 255
    assert 0 <= float(adversarial.min()) and float(adversarial.max()) <= 1 and torch.equal(adversarial, again)
    assert torch.allclose(perturbation, (delta / (16 / 255) + 0.5).clamp(0, 1), atol=1e-6)
    first, last = [float(v) for v in report.splitlines()[1].split(":")[1].split("/")]
    assert last > first
    with pytest.raises(ValueError, match="12 classes"):
        nodes["PGDAttack"].attack(classifier, images, 12, 8.0, 2.0, 1, "linf", False, 0)


def test_classify_node_lists_the_top_classes(nodes, handles, images):
    _, _, classifier = handles
    with torch.inference_mode():
        out = nodes["Classify"].classify(classifier, images, 3)
    table, index, name = out["result"]
    logits = classifier.model(images.permute(3, 0, 1, 2).unsqueeze(0))[0]
    assert index == int(logits.argmax()) and name == CLASSES[index]
    assert out["ui"]["text"] == [table] and len(table.splitlines()) == 4 and name in table.splitlines()[1]


# --- every widget of every node reaches the library ----------------------------------------------------------------
#
# For each widget: the node run with a non-default value gives exactly what the library computes with that option,
# and differs from the node run with the default ("changes"). Widgets that change how things run but not what they
# compute ("execution": chunk sizes, batch sizes) give the default's result, and their effect shows in the progress
# ticks (one per network call). Widgets that do not apply ("ignored": keep_loaded, a bundled loader's arch and
# num_classes) give the default's result and say so in their tooltip.

BIG = 64  # frame size for the widget test: RaftFlow brings it up to 128 for RAFT either way


@pytest.fixture(scope="module")
def rig(env, tiny_models):
    """What the widget test runs on: the tiny diffusion models, a random torchvision RAFT-small (so that iters and
    input_range matter), the small classifier, a clip, and weight files in the stand-in model folders."""
    from diffusers import DDIMScheduler
    from torchvision.models.optical_flow import raft_large, raft_small

    from videopure_core.classifiers import build_torchvision_classifier
    from videopure_core.loading import save_embedding

    mapping, types, state = env
    unet, vae, emb = tiny_models
    folder = f"{state.models_dir}/videopure/tiny-t2v"
    unet.save_pretrained(f"{folder}/unet")
    vae.save_pretrained(f"{folder}/vae")
    DDIMScheduler.from_config(MODELSCOPE_SCHEDULER_CONFIG).save_pretrained(f"{folder}/scheduler")
    save_embedding(emb, f"{folder}/empty_prompt.safetensors")
    torch.manual_seed(0)
    files = {}
    with torch.inference_mode(False):
        for name, module in (("raft_large.pth", raft_large(weights=None)), ("raft_small.pth", raft_small(weights=None)),
                             ("s3d_10.pth", build_torchvision_classifier("s3d", 10).model)):
            folder_name = "videopure_classifiers" if name.startswith("s3d") else "videopure_raft"
            path = f"{state.models_dir}/{folder_name}/{name}"
            import os

            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(module.state_dict(), path)
            files[name] = path
        raft = raft_small(weights=None).eval()
        classifier = WorldClassifier(num_classes=12, width=4).eval()
    models = DiffusionModels(unet, vae, MODELSCOPE_SCHEDULER_CONFIG, emb)
    frames = torch.rand(4, BIG, BIG, 3, generator=torch.Generator().manual_seed(3))
    return dict(models=models, model=types.DiffusionModel(models), raft_module=raft, raft=types.FlowModel(raft),
                classifier=types.VideoClassifier(classifier, CLASSES), classifier_module=classifier, frames=frames,
                files=files, folder=folder, state=state, types=types, flow=types.FlowModel(constant_flow_fn(1.0, 0.5)))


def _defaults(cls) -> dict:
    from workflows.graph import default_value, is_widget, node_info, ordered_inputs

    return {n: default_value(s) for n, _, s in ordered_inputs(node_info("x", cls)) if is_widget(s)}


def _tensors(module) -> tuple:
    return tuple(t.detach().clone() for t in module.state_dict().values())


def _run(fn):
    """fn() in inference mode (as ComfyUI runs nodes), or the exception it raised (as a value to compare)."""
    try:
        with torch.inference_mode():
            return fn()
    except (ValueError, RuntimeError) as err:
        return ("raised", type(err).__name__)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == \
            b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _close(a, b) -> bool:
    """_same, allowing float rounding: execution settings batch a network's calls differently, and the VAE's
    rounding differences grow through the guided steps (Purify with chunk=3: up to ~1e-4 in the latents)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _nets(rig, chunk=16):
    nets = Purifier(rig["models"]).networks()
    nets.chunk = chunk
    return nets


def _latent(rig, nodes):
    with torch.inference_mode():
        return nodes["VAEEncode"].encode(rig["model"], rig["frames"], 16)[0]


def _inverted(rig, nodes, t_star):
    with torch.inference_mode():
        return nodes["TemporalInversion"].invert(rig["model"], _latent(rig, nodes), t_star, 50, True, 0)[0]


def _flow_state(rig, nodes):
    with torch.inference_mode():
        return nodes["RAFTFlow"].flow(rig["flow"], rig["frames"], _latent(rig, nodes), 10, "-1,1", False, False, 16)[0]


def _step_config(w, t_star):
    from videopure_core.config import Guidance

    from_node = sys.modules[comfy_stub.PACK_MODULE + ".nodes.stages"]
    return PurifyConfig(t_star=t_star, guide_trajectory=w["guide_trajectory"], final_candidate=w["final_candidate"],
                        guidance=Guidance(enabled=w["guidance"], alpha_s=w["alpha_s"], lambda_temp=w["lambda_temp"],
                                          lambda_spa=w["lambda_spa"], variance_weight=w["variance_weight"],
                                          warp_grad=w["warp_grad"],
                                          lambda_reference=from_node.parse_reference(w["guidance_reference"])))


def _candidates(rig, nodes, t_star=2):
    with torch.inference_mode():
        (cands,) = nodes["GuidedDenoise"].denoise(rig["model"], _inverted(rig, nodes, t_star), **GUIDANCE,
                                                  flow=_flow_state(rig, nodes))
        return nodes["CandidateDecode"].decode(rig["model"], cands, -1, 16)[0]


# Each node: (run(nodes, rig, widgets) -> output, library(nodes, rig, widgets) -> the same output from the library).
# `nodes` gives the library functions inputs made by upstream nodes (checked against the library elsewhere).

def _diffusion_run(nodes, rig, w):
    (m,) = nodes["DiffusionLoader"].load(**w)
    return _tensors(m.models.unet) + _tensors(m.models.vae) + (m.models.embedding,)


def _diffusion_lib(nodes, rig, w):
    from videopure_core.loading import load_diffusion

    path = str(WEIGHTS / "diffusion") if w["model"] == "bundled: small world" else rig["folder"]
    dtype = torch.float32 if w["dtype"] == "auto" else getattr(torch, w["dtype"])
    m = load_diffusion(path, dtype, "cpu")
    return _tensors(m.unet) + _tensors(m.vae) + (m.embedding,)


def _raft_run(nodes, rig, w):
    return _tensors(nodes["RAFTLoader"].load(**w)[0].raft)


def _raft_lib(nodes, rig, w):
    from videopure_core.loading import load_raft

    if w["weights"] == "bundled: small world":
        return _tensors(load_raft("raft_small", WEIGHTS / "raft_small.safetensors"))
    return _tensors(load_raft(w["arch"], rig["files"][w["weights"]]))


def _classifier_run(nodes, rig, w):
    (c,) = nodes["ClassifierLoader"].load(**w)
    return _tensors(c.model), c.classes, c.frames, c.min_frames


def _classifier_lib(nodes, rig, w):
    from videopure_core.classifiers import min_frames, required_frames
    from videopure_core.loading import load_video_classifier
    from videopure_core.world.models import load_classifier

    if w["weights"] == "bundled: small world":
        model, classes = load_classifier(WEIGHTS / "classifier")
        return _tensors(model), tuple(classes), None, min_frames(model)
    model = load_video_classifier(w["arch"], rig["files"][w["weights"]], w["num_classes"])
    return _tensors(model), None, required_frames(w["arch"]), min_frames(model)


def _clip_run(nodes, rig, w):
    return nodes["WorldClip"].clip(**w)


def _clip_lib(nodes, rig, w):
    label = w["index"] % 12
    clip = make_clip(label, SPLIT_SEEDS[w["split"]] + w["index"], WorldSpec(frames=w["frames"]))
    return clip.video, label, CLASSES[label]


FIT_INPUT = torch.rand(5, 30, 21, 3, generator=torch.Generator().manual_seed(4))


def _fit_run(nodes, rig, w):
    return nodes["FitVideo"].fit(FIT_INPUT, **w)


def _fit_lib(nodes, rig, w):
    from videopure_core.io import fit_video

    return (fit_video(FIT_INPUT[: w["max_frames"] or None], w["size"] or None).clamp(0, 1),)


def _encode_run(nodes, rig, w):
    return nodes["VAEEncode"].encode(rig["model"], rig["frames"], **w)[0].z0


def _encode_lib(nodes, rig, w):
    from videopure_core import pipeline

    return pipeline.encode(_nets(rig, w["chunk"]), from_frames(rig["frames"]), pipeline.Hooks())


def _invert_run(nodes, rig, w):
    return nodes["TemporalInversion"].invert(rig["model"], _latent(rig, nodes), **w)[0].z


def _invert_lib(nodes, rig, w):
    from videopure_core.inversion import ddim_invert
    from videopure_core.schedule import make_schedule

    schedule = make_schedule(MODELSCOPE_SCHEDULER_CONFIG, w["ddim_steps"], w["t_star"])
    return ddim_invert(_nets(rig).eps, _latent(rig, nodes).z0, schedule, w["temporal"], w["noise_frame"])


def _flow_run(nodes, rig, w):
    lf = nodes["RAFTFlow"].flow(rig["raft"], rig["frames"], _latent(rig, nodes), **w)[0].flow
    return tuple(lf)


def _flow_lib(nodes, rig, w):
    from videopure_core.flow import RaftFlow, latent_flow

    fn = RaftFlow(rig["raft_module"], w["iters"], w["input_range"])
    lf = latent_flow(fn, from_frames(rig["frames"]), (BIG // 8, BIG // 8), w["bidirectional"], w["occlusion_mask"],
                     w["chunk"])
    return tuple(lf)


STEP_T_STAR = 1  # one Guided Denoise Step from the top is then also the last: it makes z_0^1 and z_0^0


def _step_run(nodes, rig, w):
    state, cands = nodes["GuidedDenoiseStep"].step(rig["model"], _inverted(rig, nodes, STEP_T_STAR), **w,
                                                   flow=_flow_state(rig, nodes))
    return state.z, cands.latents, cands.labels


def _step_lib(nodes, rig, w):
    from videopure_core.denoise import denoise_steps

    state, flow = _inverted(rig, nodes, STEP_T_STAR), _flow_state(rig, nodes)
    steps = list(denoise_steps(_nets(rig).eps, state.z, state.z0, flow.flow, state.schedule,
                               _step_config(w, STEP_T_STAR), start=state.t))
    return steps[0].z, torch.stack([s.candidate for s in steps]), tuple(s.label for s in steps)


def _denoise_run(nodes, rig, w):
    return nodes["GuidedDenoise"].denoise(rig["model"], _inverted(rig, nodes, 2), **w,
                                          flow=_flow_state(rig, nodes))[0].latents


def _denoise_lib(nodes, rig, w):
    from videopure_core import pipeline

    state, flow = _inverted(rig, nodes, 2), _flow_state(rig, nodes)
    return pipeline.denoise(_nets(rig), state.z, state.z0, flow.flow, state.schedule, _step_config(w, 2),
                            pipeline.Hooks())


def _decode_run(nodes, rig, w):
    decoded, frames, all_frames = nodes["CandidateDecode"].decode(rig["model"], _candidates(rig, nodes), **w)
    return decoded.videos, frames, all_frames


def _decode_lib(nodes, rig, w):
    from videopure_core import pipeline

    cands = _candidates(rig, nodes)
    videos = pipeline.decode(_nets(rig, w["chunk"]), cands.latents, pipeline.Hooks())
    index = -1 if w["candidate"] == -1 else cands.labels.index(w["candidate"])
    return videos, to_frames(videos[index, 0]), to_frames(videos).reshape(-1, BIG, BIG, 3)


def _purify_run(nodes, rig, w):
    out = nodes["Purify"].purify(rig["model"], rig["frames"], **w, raft=rig["raft"], classifier=rig["classifier"])
    purified, all_candidates, table, winner, cands = out["result"]
    return purified, all_candidates, table, winner, cands.latents


def _purify_lib(nodes, rig, w):
    from videopure_core.config import Guidance, Runtime
    from videopure_core.flow import RaftFlow

    reference = sys.modules[comfy_stub.PACK_MODULE + ".nodes.stages"].parse_reference(w["guidance_reference"])
    config = PurifyConfig(t_star=w["t_star"], temporal=w["temporal"], guidance=Guidance(
        enabled=w["guidance"], alpha_s=w["alpha_s"], lambda_temp=w["lambda_temp"], lambda_spa=w["lambda_spa"],
        lambda_reference=reference))
    purifier = Purifier(rig["models"], RaftFlow(rig["raft_module"], w["raft_iters"], w["raft_input_range"]), config,
                        Runtime(chunk=w["chunk"]))
    cands = purifier.purify(from_frames(rig["frames"]))
    voted = purifier.vote(cands, rig["classifier_module"])
    frames = lambda v: to_frames(v).reshape(-1, BIG, BIG, 3)  # noqa: E731
    return (frames(cands.pick(w["candidate"])), frames(cands.videos), voted.table(CLASSES), int(voted.winner[0]),
            cands.latents)


def _vote_run(nodes, rig, w):
    out = nodes["ClassifierVote"].vote(rig["classifier"], _candidates(rig, nodes), **w)
    return out["result"]


def _vote_lib(nodes, rig, w):
    from videopure_core import pipeline

    voted = pipeline.vote_candidates(rig["classifier_module"], _candidates(rig, nodes), w["batch_size"])
    return voted.table(CLASSES), int(voted.winner[0]), CLASSES[int(voted.winner[0])]


def _classify_run(nodes, rig, w):
    table, index, name = nodes["Classify"].classify(rig["classifier"], rig["frames"], **w)["result"]
    return [line.split()[0] for line in table.splitlines()[1:]], index, name


def _classify_lib(nodes, rig, w):
    probs = classify(rig["classifier_module"], from_frames(rig["frames"]))[0].softmax(-1)
    top = probs.topk(w["top_k"]).indices.tolist()
    return [CLASSES[i] for i in top], top[0], CLASSES[top[0]]


def _pgd_run(nodes, rig, w):
    return nodes["PGDAttack"].attack(rig["classifier"], rig["frames"], **w)[:2]


def _pgd_lib(nodes, rig, w):
    from videopure_core.attacks import pgd

    x = from_frames(rig["frames"])
    model = rig["classifier_module"]
    y = classify(model, x).argmax(-1) if w["label"] < 0 else torch.tensor([w["label"]])
    adv, _ = pgd(classifier_grad_fn(model), x, y, w["epsilon"] / 255, w["step_size"] / 255, w["steps"], w["norm"],
                 w["random_start"], torch.Generator().manual_seed(w["start_seed"]))
    delta = (adv - x)[0]
    return to_frames(adv[0]), to_frames((delta / (2 * max(w["epsilon"], 1e-6) / 255) + 0.5).clamp(0, 1))


def _select_run(nodes, rig, w):
    return nodes["SelectCandidate"].select(_candidates(rig, nodes), **w)


def _select_lib(nodes, rig, w):
    cands = _candidates(rig, nodes)
    return to_frames(cands.pick(w["candidate"])[0]), cands.labels[-1] if w["candidate"] == -1 else w["candidate"]


RUNS = {
    "VideoPureDiffusionLoader": (_diffusion_run, _diffusion_lib),
    "VideoPureRAFTLoader": (_raft_run, _raft_lib),
    "VideoPureClassifierLoader": (_classifier_run, _classifier_lib),
    "VideoPureWorldClip": (_clip_run, _clip_lib),
    "VideoPureFitVideo": (_fit_run, _fit_lib),
    "VideoPureVAEEncode": (_encode_run, _encode_lib),
    "VideoPureTemporalInversion": (_invert_run, _invert_lib),
    "VideoPureRAFTFlow": (_flow_run, _flow_lib),
    "VideoPureGuidedDenoiseStep": (_step_run, _step_lib),
    "VideoPureGuidedDenoise": (_denoise_run, _denoise_lib),
    "VideoPureCandidateDecode": (_decode_run, _decode_lib),
    "VideoPurePurify": (_purify_run, _purify_lib),
    "VideoPureClassifierVote": (_vote_run, _vote_lib),
    "VideoPureClassify": (_classify_run, _classify_lib),
    "VideoPurePGDAttack": (_pgd_run, _pgd_lib),
    "VideoPureSelectCandidate": (_select_run, _select_lib),
}

GUIDANCE_CASES = [("guidance", False), ("alpha_s", -8.0), ("lambda_temp", 50.0), ("lambda_spa", 0.0),
                  ("guidance_reference", "32,28,28"), ("variance_weight", "linear"), ("guide_trajectory", True),
                  ("final_candidate", "clean"), ("warp_grad", True)]
RAFT_FILE = dict(weights="raft_small.pth")
S3D = dict(weights="s3d_10.pth", arch="s3d", num_classes=10)
# (node, widget, value, kind, other widgets set for the case)
WIDGET_CASES = [
    ("VideoPureDiffusionLoader", "model", "tiny-t2v", "changes", {}),
    ("VideoPureDiffusionLoader", "dtype", "float16", "changes", dict(model="tiny-t2v")),  # compute device: a GPU
    ("VideoPureDiffusionLoader", "keep_loaded", True, "ignored", dict(model="tiny-t2v")),
    ("VideoPureRAFTLoader", "weights", "raft_large.pth", "changes", {}),
    ("VideoPureRAFTLoader", "arch", "raft_small", "changes", RAFT_FILE),
    ("VideoPureRAFTLoader", "arch", "raft_small", "ignored", {}),
    ("VideoPureRAFTLoader", "keep_loaded", True, "ignored", {}),
    ("VideoPureClassifierLoader", "weights", "s3d_10.pth", "changes", dict(arch="s3d", num_classes=10)),
    ("VideoPureClassifierLoader", "arch", "s3d", "changes", dict(S3D, arch="r3d_18")),
    ("VideoPureClassifierLoader", "arch", "s3d", "ignored", {}),
    ("VideoPureClassifierLoader", "num_classes", 10, "changes", dict(S3D, num_classes=400)),
    ("VideoPureClassifierLoader", "num_classes", 10, "ignored", {}),
    ("VideoPureClassifierLoader", "keep_loaded", True, "ignored", {}),
    ("VideoPureWorldClip", "split", "val", "changes", {}),
    ("VideoPureWorldClip", "index", 7, "changes", {}),
    ("VideoPureWorldClip", "frames", 6, "changes", {}),
    ("VideoPureFitVideo", "size", 16, "changes", {}),
    ("VideoPureFitVideo", "max_frames", 3, "changes", {}),
    ("VideoPureVAEEncode", "chunk", 3, "execution", {}),
    ("VideoPureTemporalInversion", "t_star", 3, "changes", {}),
    ("VideoPureTemporalInversion", "ddim_steps", 25, "changes", {}),
    ("VideoPureTemporalInversion", "temporal", False, "changes", {}),
    ("VideoPureTemporalInversion", "noise_frame", 2, "changes", {}),
    ("VideoPureRAFTFlow", "iters", 3, "changes", {}),
    ("VideoPureRAFTFlow", "input_range", "0,1", "changes", {}),
    ("VideoPureRAFTFlow", "bidirectional", True, "changes", {}),
    ("VideoPureRAFTFlow", "occlusion_mask", True, "changes", {}),
    ("VideoPureRAFTFlow", "chunk", 2, "execution", {}),
    *[("VideoPureGuidedDenoiseStep", n, v, "changes", {}) for n, v in GUIDANCE_CASES],
    *[("VideoPureGuidedDenoise", n, v, "changes", {}) for n, v in GUIDANCE_CASES],
    ("VideoPureCandidateDecode", "candidate", 2, "changes", {}),
    ("VideoPureCandidateDecode", "chunk", 5, "execution", {}),
    ("VideoPurePurify", "t_star", 3, "changes", {}),
    ("VideoPurePurify", "temporal", False, "changes", {}),
    *[("VideoPurePurify", n, v, "changes", {}) for n, v in GUIDANCE_CASES[:5]],
    ("VideoPurePurify", "raft_iters", 3, "changes", {}),
    ("VideoPurePurify", "raft_input_range", "0,1", "changes", {}),
    ("VideoPurePurify", "candidate", 4, "changes", {}),
    ("VideoPurePurify", "chunk", 3, "execution", {}),
    ("VideoPureClassifierVote", "batch_size", 1, "execution", {}),
    ("VideoPureClassify", "top_k", 5, "changes", {}),
    ("VideoPurePGDAttack", "label", 3, "changes", {}),
    ("VideoPurePGDAttack", "epsilon", 8.0, "changes", {}),
    ("VideoPurePGDAttack", "step_size", 0.5, "changes", {}),
    ("VideoPurePGDAttack", "steps", 3, "changes", {}),
    ("VideoPurePGDAttack", "norm", "l2", "changes", dict(epsilon=400.0, step_size=100.0)),
    ("VideoPurePGDAttack", "random_start", False, "changes", {}),
    ("VideoPurePGDAttack", "start_seed", 5, "changes", {}),
    ("VideoPureSelectCandidate", "candidate", 2, "changes", {}),
]


def test_the_widget_cases_cover_every_widget_of_every_node(env):
    mapping, _, _ = env
    covered = {(node, widget) for node, widget, _, kind, _ in WIDGET_CASES if kind != "ignored" or "keep_loaded"
               == widget}
    every = {(name, w) for name, cls in mapping.items() for w in _defaults(cls)}
    assert covered == every and set(RUNS) == {name for name, cls in mapping.items() if _defaults(cls)}


DEFAULT_RUNS: dict = {}


@pytest.mark.parametrize("node, widget, value, kind, base", WIDGET_CASES,
                         ids=[f"{n[len('VideoPure'):]}.{w}={v}/{k}" for n, w, v, k, _ in WIDGET_CASES])
def test_every_widget_reaches_the_library(env, nodes, rig, monkeypatch, node, widget, value, kind, base):
    mapping, _, state = env
    cls = mapping[node]
    default = {**_defaults(cls), **base}
    assert default[widget] != value
    changed = {**default, widget: value}
    run, library = RUNS[node]
    if widget == "dtype":  # half precision is only used on a GPU: report one (the weights still load on the CPU)
        bridge = sys.modules[comfy_stub.PACK_MODULE + ".nodes.bridge"]
        monkeypatch.setattr(bridge, "compute_device", lambda: torch.device("cuda", 0))
    state.progress.clear()
    got = _run(lambda: run(nodes, rig, changed))
    ticks = len(state.progress)
    expected = _run(lambda: library(nodes, rig, changed))
    assert not (isinstance(got, tuple) and got[:1] == ("raised",)), f"the node raised {got}"
    assert _same(got, expected), f"{node}.{widget}={value!r} differs from the library with that option"
    key = (node, repr(sorted(default.items())), widget == "dtype")
    if key not in DEFAULT_RUNS:  # the default run, once per node and base
        state.progress.clear()
        DEFAULT_RUNS[key] = _run(lambda: run(nodes, rig, default)), len(state.progress)
    before, default_ticks = DEFAULT_RUNS[key]
    tooltip = dict(cls.INPUT_TYPES()["required"])[widget][1]["tooltip"]
    if kind == "changes":
        assert not _same(got, before), f"{node}.{widget}={value!r} gives the same result as {default[widget]!r}"
    elif kind == "execution":
        assert _close(got, before) and ticks != default_ticks, "an execution setting changes the ticks, not the result"
    else:
        assert _same(got, before) and ("Ignored" in tooltip or "Not used" in tooltip)


# --- ComfyUI 0.33 interop: core OPTICAL_FLOW, its model folders -------------------------------------------------------


def test_raft_flow_and_purify_take_comfyuis_core_optical_flow_model(env, nodes, rig):
    import comfy.model_patcher

    mapping, types, state = env
    assert mapping["VideoPureRAFTFlow"].INPUT_TYPES()["required"]["raft"][0] == "VIDEOPURE_RAFT,OPTICAL_FLOW"
    assert mapping["VideoPurePurify"].INPUT_TYPES()["optional"]["raft"][0] == "VIDEOPURE_RAFT,OPTICAL_FLOW"
    # what ComfyUI 0.33's Load Optical Flow Model returns: torchvision RAFT in a ModelPatcher
    core = comfy.model_patcher.ModelPatcher(rig["raft_module"], torch.device("cpu"), torch.device("cpu"))
    latent = _latent(rig, nodes)
    state.loads.clear()
    with torch.inference_mode():
        (ours,) = nodes["RAFTFlow"].flow(rig["raft"], rig["frames"], latent, 4, "-1,1", False, False, 16)
        (theirs,) = nodes["RAFTFlow"].flow(core, rig["frames"], latent, 4, "-1,1", False, False, 16)
        purified = nodes["Purify"].purify(rig["model"], rig["frames"], 2, True, True, -4.0, 5.0, 800.0, "", 4, "-1,1",
                                          0, 16, core, None)["result"][0]
    assert torch.equal(ours.flow.forward, theirs.flow.forward) and float(ours.flow.forward.abs().max()) > 0
    assert any(core in load for load in state.loads)  # loaded through ComfyUI's model management, as given
    reference = Purifier(rig["models"], types.FlowModel(rig["raft_module"]).flow_fn(4), PurifyConfig(t_star=2))
    assert torch.equal(purified, to_frames(reference.purify(from_frames(rig["frames"])).videos[-1, 0]))
    with pytest.raises(TypeError, match="Load Optical Flow Model"):
        nodes["RAFTFlow"].flow(torch.nn.Linear(2, 2), rig["frames"], latent, 4, "-1,1", False, False, 16)


def test_loaders_also_search_comfyuis_optical_flow_and_diffusers_folders(env, nodes, rig, tmp_path):
    import folder_paths

    mapping, _, state = env
    # the pack registered optical_flow (this stand-in, like ComfyUI 0.3.75, has none), with weight extensions
    assert folder_paths.get_folder_paths("optical_flow") == [f"{state.models_dir}/optical_flow"]
    flow_dir = tmp_path / "core_optical_flow"
    flow_dir.mkdir()
    import shutil

    shutil.copy(rig["files"]["raft_small.pth"], flow_dir / "raft_large_core.pth")
    (flow_dir / "notes.txt").write_text("not weights")
    folder_paths.add_model_folder_path("optical_flow", str(flow_dir))
    diffusers_dir = tmp_path / "core_diffusers"
    shutil.copytree(rig["folder"], diffusers_dir / "my-t2v")
    folder_paths.add_model_folder_path("diffusers", str(diffusers_dir))
    try:
        raft_choices = mapping["VideoPureRAFTLoader"].INPUT_TYPES()["required"]["weights"][0]
        model_choices = mapping["VideoPureDiffusionLoader"].INPUT_TYPES()["required"]["model"][0]
        assert "raft_large_core.pth" in raft_choices and "notes.txt" not in raft_choices
        assert "my-t2v" in model_choices
        with torch.inference_mode():
            (raft,) = nodes["RAFTLoader"].load("raft_large_core.pth", "raft_small", False)
            (model,) = nodes["DiffusionLoader"].load("my-t2v", "auto", False)
        from videopure_core.loading import load_raft

        assert _same(_tensors(raft.raft), _tensors(load_raft("raft_small", rig["files"]["raft_small.pth"])))
        assert torch.equal(next(model.models.unet.parameters()), next(rig["models"].unet.parameters()))
    finally:
        folder_paths.folder_names_and_paths["optical_flow"][0].remove(str(flow_dir))
        del folder_paths.folder_names_and_paths["diffusers"]


def test_model_folders_keep_paths_from_extra_model_paths_in_front(tmp_path):
    with comfy_stub.installed(tmp_path / "models"):
        import folder_paths

        folder_paths.add_model_folder_path("videopure_raft", "/yaml/raft")  # what extra_model_paths.yaml made
        folder_paths.add_model_folder_path("optical_flow", "/core/optical_flow")  # ComfyUI 0.33's own folder
        folder_paths.folder_names_and_paths["optical_flow"] = (["/core/optical_flow"], {".pth"})
        comfy_stub.load_pack()
        assert folder_paths.get_folder_paths("videopure_raft") == ["/yaml/raft", f"{tmp_path}/models/videopure_raft"]
        assert folder_paths.folder_names_and_paths["videopure_raft"][1] >= {".pth", ".safetensors"}
        assert folder_paths.folder_names_and_paths["optical_flow"] == (["/core/optical_flow"], {".pth"})  # untouched


# --- the bugs and rough edges of issue 13, point 6 ------------------------------------------------------------------


def test_a_classifier_given_too_few_frames_names_its_minimum_not_the_vae_or_optical_flow(env, nodes, handles):
    _, types, _ = env
    _, _, classifier = handles  # the small world's architecture: two 2x temporal poolings
    assert classifier.min_frames == 4
    three = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for call in (lambda: nodes["Classify"].classify(classifier, three, 3),
                     lambda: nodes["PGDAttack"].attack(classifier, three, -1, 4.0, 2.0, 1, "linf", True, 0)):
            with pytest.raises(ValueError) as err:
                call()
            assert "at least 4 frames" in str(err.value) and "this video has 3" in str(err.value)
            assert "VAE" not in str(err.value) and "optical flow" not in str(err.value)
        # a classifier that takes any size: odd sizes and single frames are fine for Classify and PGD
        torch.manual_seed(0)
        with torch.inference_mode(False):
            any_size = types.VideoClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1980, 5)))
        odd = torch.rand(1, 30, 22, 3)
        assert nodes["Classify"].classify(any_size, odd, 2)["result"][1] in range(5)
        nodes["PGDAttack"].attack(any_size, odd, -1, 4.0, 2.0, 1, "linf", True, 0)


@pytest.mark.skipif(not (WEIGHTS / "classifier" / "config.json").is_file(), reason="bundled world weights not present")
def test_the_bundled_classifier_on_two_or_three_frames_gives_an_error_that_names_the_fix(nodes):
    with torch.inference_mode():
        (classifier,) = nodes["ClassifierLoader"].load("bundled: small world", "r3d_18", 400, False)
        for frames in (2, 3):
            images, _, _ = nodes["WorldClip"].clip("test", 1, frames)
            with pytest.raises(ValueError, match=f"at least 4 frames .*this video has {frames}.*frames >= 4"):
                nodes["Classify"].classify(classifier, images, 3)
        images, _, _ = nodes["WorldClip"].clip("test", 1, 4)
        assert nodes["Classify"].classify(classifier, images, 3)["result"][2] in CLASSES


def test_purify_t_star_stops_at_the_ddim_steps_it_can_run(env):
    from comfy_tools import check_api

    mapping, _, _ = env
    spec = mapping["VideoPurePurify"].INPUT_TYPES()["required"]["t_star"]
    assert spec[1]["max"] == PurifyConfig().ddim_steps == 50
    PurifyConfig(t_star=spec[1]["max"])  # the largest value runs
    with pytest.raises(ValueError):
        PurifyConfig(t_star=spec[1]["max"] + 1)
    from workflows.graph import object_info_of

    info = object_info_of({"VideoPurePurify": mapping["VideoPurePurify"]}, core=False)
    api = {"1": {"class_type": "VideoPurePurify", "inputs": {"t_star": 51}}}
    assert any("t_star=51 is above its maximum 50" in p for p in check_api(api, info))


def _count_unet_calls(unet):
    calls = []
    return calls, unet.register_forward_pre_hook(lambda *a: calls.append(1))


def test_purify_checks_candidate_first_and_choosing_another_does_not_purify_again(env, nodes, handles, images):
    _, _, state = env
    model, raft, _ = handles
    args = (model, images, 2, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1")
    calls, hook = _count_unet_calls(model.models.unet)
    try:
        state.loads.clear()
        with torch.inference_mode():
            with pytest.raises(ValueError, match=r"candidate=3 is not among the candidates z_0\^t with t in \[2, 1, 0\]"):
                nodes["Purify"].purify(*args, 3, 16, raft, None)
            assert calls == [] and state.loads == []  # refused before any work
            first = nodes["Purify"].purify(*args, 0, 16, raft, None)["result"]
            purified = len(calls)
            second = nodes["Purify"].purify(*args, 2, 16, raft, None)["result"]
            assert len(calls) == purified > 0  # only `candidate` changed: no network ran again
            third = nodes["Purify"].purify(*args[:2], 1, *args[3:], 0, 16, raft, None)["result"]
            assert len(calls) > purified  # another input: purified again
        assert torch.equal(second[4].latents, first[4].latents) and not torch.equal(second[0], first[0])
        assert torch.equal(second[0], to_frames(first[4].videos[0, 0])) and third[4].labels == (1, 0)
        with torch.inference_mode():
            frames, t = nodes["SelectCandidate"].select(first[4], 2)
            last, t_last = nodes["SelectCandidate"].select(first[4], -1)
            with pytest.raises(ValueError, match="candidate=5"):
                nodes["SelectCandidate"].select(first[4], 5)
            with pytest.raises(ValueError, match="candidate=5"):  # Candidate Decode checks before decoding too
                nodes["CandidateDecode"].decode(model, Candidates(None, first[4].latents, first[4].labels), 5, 16)
        assert (t, t_last) == (2, 0) and torch.equal(frames, second[0]) and torch.equal(last, first[0])
    finally:
        hook.remove()


def test_bundled_loaders_hide_exactly_the_widgets_they_do_not_use(env):
    import re

    mapping, _, _ = env
    script = (comfy_stub.REPO / "web" / "videopure_loaders.js").read_text()
    declared = {name: re.findall(r'"(\w+)"', widgets)
                for name, widgets in re.findall(r"(VideoPure\w+Loader): \[([^\]]*)\]", script)}
    unused = {name: [w for w, s in cls.INPUT_TYPES()["required"].items() if "Not used for the bundled" in
                     s[1].get("tooltip", "")] for name, cls in mapping.items() if name.endswith("Loader")}
    assert declared == {k: v for k, v in unused.items() if v} == {
        "VideoPureRAFTLoader": ["arch"], "VideoPureClassifierLoader": ["arch", "num_classes"]}
    ignored = sorted({w for cls in mapping.values() for w, s in cls.INPUT_TYPES()["required"].items()
                      if s[1].get("tooltip", "").startswith("Ignored")})
    assert ignored == ["keep_loaded"] and 'IGNORED_WIDGETS = ["keep_loaded"]' in script
    assert 'BUNDLED = "bundled: small world"' in script
    assert sys.modules[comfy_stub.PACK_MODULE].WEB_DIRECTORY == "./web"


@pytest.mark.skipif(not __import__("shutil").which("node"), reason="node (JavaScript) not installed")
def test_the_frontend_extension_hides_and_shows_the_loader_widgets(tmp_path):
    test = tmp_path / "t.mjs"
    test.write_text(f"""
import {{ updateLoaderWidgets, watchLoaderWidgets }} from "{comfy_stub.REPO / 'web' / 'videopure_loaders.js'}";
const w = (name, value) => ({{ name, value }});
const node = {{ comfyClass: "VideoPureClassifierLoader", size: [300, 200], widgets: [w("weights", "bundled: small world"),
  w("arch", "r3d_18"), w("num_classes", 400), w("keep_loaded", false)],
  computeSize() {{ return [300, 30 + 20 * this.widgets.filter(x => !x.hidden).length]; }},
  setSize(s) {{ this.size = s; }} }};
watchLoaderWidgets(node);
const seen = [node.widgets.map(x => Boolean(x.hidden)), node.size[1]];
node.widgets[0].value = "r3d_18-b3b3357e.pth"; node.widgets[0].callback();
seen.push(node.widgets.map(x => Boolean(x.hidden)), node.size[1]);
node.widgets[0].value = "bundled: small world"; node.onConfigure();
seen.push(node.widgets.map(x => Boolean(x.hidden)), node.widgets[1].computeSize(300));
const other = {{ comfyClass: "VideoPureDiffusionLoader", widgets: [w("model", "bundled: small world"),
  w("dtype", "auto"), w("keep_loaded", false)] }};
seen.push(updateLoaderWidgets(other), other.widgets.map(x => Boolean(x.hidden)));
const core = {{ comfyClass: "CheckpointLoaderSimple", widgets: [w("keep_loaded", false)] }};
seen.push(updateLoaderWidgets(core));
console.log(JSON.stringify(seen));
""")
    out = subprocess.run(["node", str(test)], capture_output=True, text=True, check=True).stdout
    import json

    assert json.loads(out) == [[False, True, True, True], 50, [False, False, False, True], 90,
                               [False, True, True, True], [0, -4], True, [False, False, True], False]


def test_a_second_copy_of_the_pack_refuses_to_load_and_names_both(env, tmp_path):
    import importlib.util

    copy = tmp_path / "videopure-copy"
    (copy / "videopure_core").mkdir(parents=True)
    (copy / "__init__.py").write_text((comfy_stub.REPO / "__init__.py").read_text())
    (copy / "videopure_core" / "__init__.py").write_text("raise AssertionError('the copy must not load its library')")
    spec = importlib.util.spec_from_file_location("videopure_copy_pack", copy / "__init__.py",
                                                  submodule_search_locations=[str(copy)])
    with pytest.raises(ImportError) as err:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    message = str(err.value)
    assert f"this copy ({copy})" in message and f"the copy at {comfy_stub.REPO}" in message
    assert "Remove or disable one of them" in message


def test_a_pack_copy_uses_its_own_library_rather_than_an_installed_one(tmp_path):
    code = f"""
import importlib.util, sys, types
sys.modules['folder_paths'] = types.ModuleType('folder_paths')  # "inside ComfyUI"
spec = importlib.util.spec_from_file_location('pack', {str(tmp_path / 'pack' / '__init__.py')!r},
                                              submodule_search_locations=[{str(tmp_path / 'pack')!r}])
try:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
except ImportError as err:  # no nodes/ in this small copy: the library was imported first
    pass
print(sys.modules['videopure_core'].WHERE)
"""
    (tmp_path / "pack" / "videopure_core").mkdir(parents=True)
    (tmp_path / "pack" / "__init__.py").write_text((comfy_stub.REPO / "__init__.py").read_text())
    (tmp_path / "pack" / "videopure_core" / "__init__.py").write_text("WHERE = 'the pack copy'")
    (tmp_path / "installed" / "videopure_core").mkdir(parents=True)
    (tmp_path / "installed" / "videopure_core" / "__init__.py").write_text("WHERE = 'installed'")
    env = {"PYTHONPATH": str(tmp_path / "installed"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "the pack copy"


# --- progress, Cancel and previews on long videos ---------------------------------------------------------------


def test_progress_ticks_once_per_network_call_on_a_long_video(env, nodes, handles):
    from videopure_core.pipeline import progress_steps

    _, _, state = env
    model, raft, _ = handles
    long = torch.rand(200, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    state.progress.clear()
    with torch.inference_mode():
        nodes["Purify"].purify(model, long, 2, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 16, raft, None)
    steps = progress_steps((1, 3, 200, 16, 16), PurifyConfig(t_star=2), 16)
    assert steps == {"encode": 13, "flow": 13, "invert": 2, "denoise": 3, "decode": 38}
    values = [v for v, _ in state.progress]
    assert values == list(range(1, 70)) and {t for _, t in state.progress} == {69}  # 13+13+2+3+38, one at a time


class SlowLayers(torch.nn.Module):
    """A flow network of 20 layers that take 50 ms each: one call (a chunk of frame pairs) takes a second."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Identity() for _ in range(20))

    def forward(self, image1, image2):
        import time

        for layer in self.layers:
            time.sleep(0.05)
            layer(image1)
        return torch.zeros(image1.shape[0], 2, *image1.shape[2:])


def test_cancel_stops_a_long_network_call_within_a_layer(env, nodes, handles, images):
    import threading
    import time

    _, types, state = env
    model, _, _ = handles
    slow = types.FlowModel(SlowLayers())
    with torch.inference_mode():
        (latent,) = nodes["VAEEncode"].encode(model, images, 16)
        timer = threading.Timer(0.3, lambda: setattr(state, "interrupt", True))
        start = time.monotonic()
        timer.start()
        with pytest.raises(comfy_stub.InterruptProcessingException):
            nodes["RAFTFlow"].flow(slow, images, latent, 10, "-1,1", False, False, 16)  # one call of 3 pairs
    latency = time.monotonic() - start - 0.3
    assert latency < 0.2, f"Cancel took {latency:.2f} s (one layer is 0.05 s, the whole call 1 s)"
    with torch.inference_mode():  # and the hooks are gone afterwards: the network runs to the end
        nodes["RAFTFlow"].flow(slow, images[:2], nodes["VAEEncode"].encode(model, images[:2], 16)[0], 10, "-1,1",
                               False, False, 16)


def test_candidates_are_previewed_while_purifying_when_comfyui_shows_previews(env, nodes, handles, images):
    _, _, state = env
    model, raft, _ = handles
    args = (model, images, 2, True, True, -4.0, 5.0, 800.0, "", 10, "-1,1", 0, 16, raft, None)
    state.previews.clear()
    with torch.inference_mode():
        nodes["Purify"].purify(*args)
    assert state.previews == []  # ComfyUI's default: --preview-method none
    state.show_previews = True
    try:
        with torch.inference_mode():
            candidates = type(nodes["Purify"])().purify(*args)["result"][4]
            inverted = nodes["TemporalInversion"].invert(model, nodes["VAEEncode"].encode(model, images, 16)[0], 2,
                                                         50, True, 0)[0]
            step_previews = len(state.previews)
            nodes["GuidedDenoiseStep"].step(model, inverted, **{**GUIDANCE, "lambda_temp": 0.0})
    finally:
        state.show_previews = False
    assert step_previews == 3 and len(state.previews) == 4  # one per candidate z_0^2, z_0^1, z_0^0; then one step
    for (fmt, image, size), video in zip(state.previews, candidates.videos):
        middle = (video[0, :, 2].permute(1, 2, 0) * 255).round().to(torch.uint8)  # frame 4 // 2 of the video
        assert (fmt, size, image.size) == ("JPEG", 512, (32, 32))
        pixels = torch.tensor(__import__("numpy").array(image))
        assert int((pixels.int() - middle.int()).abs().max()) <= 1
