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
