"""Write VideoPure's bundled workflows: UI format in workflows/*.json, API format in workflows/api/*.json.

    python workflows/build.py           # (re)write the files
    python workflows/build.py --check   # exit 1 if a file differs from what this script makes

The graphs are defined here once; the node definitions come from the pack itself (loaded with the small
ComfyUI stand-ins of the tests), the API files are the UI graphs converted by workflows/graph.py, and
tests/test_nodes_workflows.py checks that the files on disk are exactly what this script makes.
Every workflow runs on the bundled small world; see docs/comfyui.md for switching to ModelScope weights.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from videopure_core.io import atomic_write  # noqa: E402
from videopure_core.world import WORLD_OPTIONS  # noqa: E402
from workflows.graph import UIGraph, object_info_of, ui_to_api  # noqa: E402

BUNDLED = "bundled: small world"
# the world's VideoPure options as the guidance widget spells them (the paper's lambdas rescaled to its latent)
WORLD_GUIDANCE = dict(guidance_reference=",".join(map(str, WORLD_OPTIONS["lambda_reference"])))

NOTE_WORLD = (
    "Runs on the small world bundled with VideoPure (64x64 clips of a shape moving left/right/up/down, its own "
    "VAE + video UNet, RAFT-small and a 12-class classifier), on CPU or GPU.\n\n"
    "For the paper's setting: put ModelScope text-to-video-ms-1.7b (diffusers folder) in models/videopure/, "
    "raft_large_C_T_V1 weights in models/videopure_raft/ and a torchvision video classifier in "
    "models/videopure_classifiers/, pick them in the loaders (RAFT arch raft_large), feed 32 frames at 224x224 "
    "(VideoPure Fit Video) and clear guidance_reference. See docs/comfyui.md."
)


def object_info() -> dict:
    import comfy_stub

    with tempfile.TemporaryDirectory() as models, comfy_stub.installed(models):
        pack = comfy_stub.load_pack()
        return object_info_of(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)


def stack(g: UIGraph, x: float, nodes: list[int], y: float = 60, gap: float = 70) -> float:
    """Place nodes one under the other at column x (gap leaves room for the title bars); returns the next y."""
    for node in nodes:
        g.place(node, (x, y))
        y += g.nodes[node - 1]["size"][1] + gap
    return y


def _sources(g: UIGraph) -> tuple[int, int, int, int]:
    """The three loaders on the bundled world, a test clip and the note, in the first column."""
    model = g.add("VideoPureDiffusionLoader", model=BUNDLED)
    raft = g.add("VideoPureRAFTLoader", weights=BUNDLED, arch="raft_small")
    classifier = g.add("VideoPureClassifierLoader", weights=BUNDLED)
    clip = g.add("VideoPureWorldClip", split="test", index=1, frames=16)
    note = g.note(NOTE_WORLD, pos=(0, 0), size=(340, 330))
    stack(g, 40, [model, raft, classifier, clip, note])
    return model, raft, classifier, clip


def paper_pipeline(info: dict) -> UIGraph:
    """The full pipeline from the composable stage nodes: encode, invert, flow, 6 guided steps, decode, vote."""
    g = UIGraph(info)
    model, raft, classifier, clip = _sources(g)
    encode = g.add("VideoPureVAEEncode")
    invert = g.add("VideoPureTemporalInversion", t_star=6)
    flow = g.add("VideoPureRAFTFlow")
    stack(g, 440, [encode, invert, flow])
    g.connect(model, "model", encode, "model")
    g.connect(clip, "images", encode, "images")
    g.connect(model, "model", invert, "model")
    g.connect(encode, "latent", invert, "latent")
    g.connect(raft, "raft", flow, "raft")
    g.connect(clip, "images", flow, "images")
    g.connect(encode, "latent", flow, "latent")
    previous, steps = invert, []
    for i in range(6):
        step = g.add("VideoPureGuidedDenoiseStep", title=f"Guided Denoise Step {i + 1} (t={101 - 20 * i})",
                     **WORLD_GUIDANCE)
        g.connect(model, "model", step, "model")
        g.connect(previous, "latent", step, "latent")
        g.connect(flow, "flow", step, "flow")
        previous = step
        steps.append(step)
    for column in range(3):
        bottom = stack(g, 840 + 400 * column, [steps[column], steps[column + 3]])
    decode = g.add("VideoPureCandidateDecode")
    vote = g.add("VideoPureClassifierVote")
    save = g.add("SaveImage", title="purified frames (z_0^0)", filename_prefix="videopure/paper_pipeline")
    stack(g, 2040, [decode, vote, save])
    show_vote = g.add("PreviewAny", title="vote")
    show_all = g.add("PreviewImage", title="all candidates z_0^6 ... z_0^0")
    stack(g, 2440, [show_vote, show_all])
    flow_image = g.add("VideoPureFlowImage")
    show_flow = g.add("PreviewImage", title="optical flow (latent grid, as colour)")
    show_input = g.add("PreviewImage", title="input frames")
    stack(g, 840, [flow_image], y=bottom)
    stack(g, 1240, [show_flow], y=bottom)
    stack(g, 1640, [show_input], y=bottom)
    g.connect(model, "model", decode, "model")
    g.connect(previous, "candidates", decode, "candidates")
    g.connect(classifier, "classifier", vote, "classifier")
    g.connect(decode, "candidates", vote, "candidates")
    g.connect(vote, "table", show_vote, "source")
    g.connect(decode, "frames", save, "images")
    g.connect(decode, "all_frames", show_all, "images")
    g.connect(flow, "flow", flow_image, "flow")
    g.connect(flow_image, "flow_image", show_flow, "images")
    g.connect(clip, "images", show_input, "images")
    g.group("models and input", [model, raft, classifier, clip])
    g.group("Algorithm 1: temporal DDIM inversion, then t* = 6 guided denoising steps", [encode, invert, flow, *steps])
    g.group("multi-step voting", [decode, vote, show_vote])
    return g


def one_node(info: dict) -> UIGraph:
    """The same pipeline in one VideoPure Purify node."""
    g = UIGraph(info)
    model, raft, classifier, clip = _sources(g)
    purify = g.add("VideoPurePurify", **WORLD_GUIDANCE)
    stack(g, 440, [purify])
    show_vote = g.add("PreviewAny", title="vote")
    show_input = g.add("PreviewImage", title="input frames")
    stack(g, 840, [show_vote, show_input])
    save = g.add("SaveImage", title="purified frames (z_0^0)", filename_prefix="videopure/one_node")
    show_all = g.add("PreviewImage", title="all candidates z_0^6 ... z_0^0")
    stack(g, 1320, [save, show_all])
    g.connect(model, "model", purify, "model")
    g.connect(clip, "images", purify, "images")
    g.connect(raft, "raft", purify, "raft")
    g.connect(classifier, "classifier", purify, "classifier")
    g.connect(clip, "images", show_input, "images")
    g.connect(purify, "vote_table", show_vote, "source")
    g.connect(purify, "purified", save, "images")
    g.connect(purify, "all_candidates", show_all, "images")
    return g


def attack_compare(info: dict) -> UIGraph:
    """Clean vs attacked (PGD on the bare classifier) vs attacked + VideoPure."""
    g = UIGraph(info)
    model, raft, classifier, clip = _sources(g)
    attack = g.add("VideoPurePGDAttack", epsilon=4.0, step_size=2.0, steps=10)
    clean_cls = g.add("VideoPureClassify", title="clean, no defence")
    adv_cls = g.add("VideoPureClassify", title="attacked, no defence")
    stack(g, 440, [attack, clean_cls, adv_cls])
    purify = g.add("VideoPurePurify", title="attacked + VideoPure", **WORLD_GUIDANCE)
    stack(g, 840, [purify])
    text_report = g.add("PreviewAny", title="attack report")
    text_clean = g.add("PreviewAny", title="clean: prediction")
    text_adv = g.add("PreviewAny", title="attacked: prediction")
    text_vote = g.add("PreviewAny", title="attacked + VideoPure: vote")
    stack(g, 1240, [text_report, text_clean, text_adv, text_vote])
    show_clean = g.add("PreviewImage", title="clean frames")
    show_adv = g.add("PreviewImage", title="attacked frames")
    stack(g, 1720, [show_clean, show_adv])
    show_delta = g.add("PreviewImage", title="perturbation (x32, grey = 0)")
    save = g.add("SaveImage", title="purified frames", filename_prefix="videopure/attack_compare")
    stack(g, 2100, [show_delta, save])
    g.connect(classifier, "classifier", attack, "classifier")
    g.connect(clip, "images", attack, "images")
    g.connect(clip, "label", attack, "label")
    g.connect(classifier, "classifier", clean_cls, "classifier")
    g.connect(clip, "images", clean_cls, "images")
    g.connect(classifier, "classifier", adv_cls, "classifier")
    g.connect(attack, "adversarial", adv_cls, "images")
    g.connect(model, "model", purify, "model")
    g.connect(attack, "adversarial", purify, "images")
    g.connect(raft, "raft", purify, "raft")
    g.connect(classifier, "classifier", purify, "classifier")
    g.connect(clip, "images", show_clean, "images")
    g.connect(attack, "adversarial", show_adv, "images")
    g.connect(attack, "perturbation", show_delta, "images")
    g.connect(purify, "purified", save, "images")
    g.connect(attack, "report", text_report, "source")
    g.connect(clean_cls, "table", text_clean, "source")
    g.connect(adv_cls, "table", text_adv, "source")
    g.connect(purify, "vote_table", text_vote, "source")
    return g


WORKFLOWS = {
    "videopure_paper_pipeline": paper_pipeline,
    "videopure_one_node": one_node,
    "videopure_attack_compare": attack_compare,
}


def render(info: dict | None = None) -> dict[Path, str]:
    """{path: file text} of every bundled workflow, UI and API format."""
    info = info or object_info()
    files = {}
    for name, build in WORKFLOWS.items():
        ui = build(info).ui()
        files[HERE / f"{name}.json"] = json.dumps(ui, indent=2) + "\n"
        files[HERE / "api" / f"{name}.json"] = json.dumps(ui_to_api(ui, info), indent=2) + "\n"
    return files


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [str(p.relative_to(REPO)) for p, text in files.items() if not p.is_file() or p.read_text() != text]
        print("stale: " + ", ".join(stale) if stale else "workflows are up to date")
        return 1 if stale else 0
    for path, text in files.items():
        with atomic_write(path) as f:
            f.write(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
