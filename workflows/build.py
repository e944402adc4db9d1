"""Write VideoPure's bundled workflows: templates (UI format) in example_workflows/, API format in workflows/api/.

    python workflows/build.py           # (re)write the files (and the sample clip, if it is missing)
    python workflows/build.py --check   # exit 1 if a file differs from what this script makes

The graphs are defined here once; the node definitions come from the pack itself (loaded with the small
ComfyUI stand-ins of the tests), the API files are the UI graphs converted by workflows/graph.py, and
tests/test_nodes_workflows.py checks that the files on disk are exactly what this script makes.

ComfyUI's template browser lists example_workflows/*.json under the pack, titled by file name, with the .jpg of the
same name as the thumbnail (made from screenshots of the real frontend, see docs/comfyui.md). Each template opens
on a saved view that shows the whole graph in a 1920x1080 window, and its nodes carry the registry id and version
of their pack (cnr_id / ver), so that the Manager can install VideoPure for a user who opens a template without it.
Every workflow runs on the bundled small world; see docs/comfyui.md for switching to ModelScope weights.
"""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATES = REPO / "example_workflows"
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from videopure_core.io import atomic_write  # noqa: E402
from videopure_core.world import WORLD_OPTIONS  # noqa: E402
from workflows.graph import UIGraph, object_info_of, ui_to_api  # noqa: E402

BUNDLED = "bundled: small world"
SAMPLE_VIDEO = "videopure_world_clip.mp4"  # in example_workflows/; the pack copies it into ComfyUI's input folder
# the world's VideoPure options as the guidance widget spells them (the paper's lambdas rescaled to its latent)
WORLD_GUIDANCE = dict(guidance_reference=",".join(map(str, WORLD_OPTIONS["lambda_reference"])))
CORE = ("comfy-core", "0.3.75")  # the oldest ComfyUI these workflows are checked with (CI)

COL = 340  # column pitch: 300-unit nodes and a 40-unit gap
GAP = 60  # between a node's bottom and the next node's position (its title bar is 30 units above it)

SETTING = (
    "**Runs anywhere** on the small world bundled with VideoPure (64x64 clips of a shape moving left, right, up or "
    "down; its own VAE and video UNet, RAFT-small and a 12-class classifier), on the CPU or a GPU.\n\n"
    "**For the paper's setting** put ModelScope *text-to-video-ms-1.7b* (diffusers folder) in `models/videopure/`, "
    "RAFT *raft_large_C_T_V1* in `models/videopure_raft/` (or ComfyUI's Load Optical Flow Model), a torchvision "
    "video classifier in `models/videopure_classifiers/`, pick them in the loaders, feed 32 frames at 224x224 "
    "(VideoPure Fit Video) and clear `guidance_reference`. See docs/comfyui.md."
)


def registry_id() -> tuple[str, str]:
    """(cnr_id, ver) of this pack: the registry's node id and version, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["name"], project["version"]


def node_properties(kind: str) -> dict:
    cnr_id, ver = registry_id() if kind.startswith("VideoPure") else CORE
    return {"cnr_id": cnr_id, "ver": ver}


def object_info() -> dict:
    import comfy_stub

    with tempfile.TemporaryDirectory() as models, comfy_stub.installed(models):
        pack = comfy_stub.load_pack()
        return object_info_of(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)


def graph(info: dict) -> UIGraph:
    return UIGraph(info, node_properties)


def stack(g: UIGraph, column: int, nodes: list[int], y: float = 0) -> float:
    """Place nodes one under the other in a column; returns the y below the last one."""
    for node in nodes:
        g.place(node, (column * COL, y))
        y += g.nodes[node - 1]["size"][1] + GAP
    return y


def note(g: UIGraph, title: str, what: str, column: int, y: float, height: float = 330) -> int:
    """The template's description: what it shows, then how to run it on the paper's models."""
    return g.note(f"## {title}\n\n{what}\n\n{SETTING}", pos=(column * COL, y), size=(300, height),
                  kind="MarkdownNote")


def _loaders(g: UIGraph) -> tuple[int, int, int]:
    model = g.add("VideoPureDiffusionLoader", model=BUNDLED)
    raft = g.add("VideoPureRAFTLoader", weights=BUNDLED, arch="raft_small")
    classifier = g.add("VideoPureClassifierLoader", weights=BUNDLED)
    return model, raft, classifier


def _sources(g: UIGraph, title: str, what: str) -> tuple[int, int, int, int]:
    """The three loaders on the bundled world, a held-out test clip and the description, in the first column."""
    model, raft, classifier = _loaders(g)
    clip = g.add("VideoPureWorldClip", split="test", index=1, frames=16)
    y = stack(g, 0, [model, raft, classifier, clip])
    note(g, title, what, 0, y)
    return model, raft, classifier, clip


def paper_pipeline(info: dict) -> UIGraph:
    """The full pipeline from the composable stage nodes: encode, invert, flow, 6 guided steps, decode, vote."""
    g = graph(info)
    model, raft, classifier, clip = _sources(g, "VideoPure, step by step", (
        "Algorithm 1 of the paper from its stages: VAE Encode, Temporal DDIM Inversion (t* = 6), RAFT Flow, six "
        "Guided Denoise Steps (each makes one candidate z_0^t), Candidate Decode and the Classifier Vote."))
    encode = g.add("VideoPureVAEEncode")
    invert = g.add("VideoPureTemporalInversion", t_star=6)
    flow = g.add("VideoPureRAFTFlow")
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
    stack(g, 2, steps[:3])
    stack(g, 3, steps[3:])
    decode = g.add("VideoPureCandidateDecode")
    vote = g.add("VideoPureClassifierVote")
    save = g.add("SaveImage", title="purified frames (z_0^0)", filename_prefix="videopure/paper_pipeline")
    show_vote = g.add("PreviewAny", title="vote")
    show_all = g.add("PreviewImage", title="all candidates z_0^6 ... z_0^0")
    flow_image = g.add("VideoPureFlowImage")
    show_flow = g.add("PreviewImage", title="optical flow (latent grid, as colour)")
    show_input = g.add("PreviewImage", title="input frames")
    stack(g, 1, [encode, invert, flow, flow_image, show_flow])
    stack(g, 4, [decode, vote, show_vote, save])
    stack(g, 5, [show_all, show_input])
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
    g.group("Algorithm 1: temporal DDIM inversion, then t* = 6 guided denoising steps", [encode, invert, flow, *steps])
    g.group("multi-step voting", [decode, vote, show_vote])
    return g


def one_node(info: dict) -> UIGraph:
    """The same pipeline in one VideoPure Purify node; Select Candidate picks another candidate without purifying
    again."""
    g = graph(info)
    model, raft, classifier, clip = _sources(g, "VideoPure in one node", (
        "VideoPure Purify runs the whole of Algorithm 1 and the vote. VideoPure Select Candidate shows another "
        "candidate (here z_0^6, the least denoised one) without purifying again."))
    purify = g.add("VideoPurePurify", **WORLD_GUIDANCE)
    show_vote = g.add("PreviewAny", title="vote")
    show_input = g.add("PreviewImage", title="input frames")
    save = g.add("SaveImage", title="purified frames (z_0^0)", filename_prefix="videopure/one_node")
    show_all = g.add("PreviewImage", title="all candidates z_0^6 ... z_0^0")
    select = g.add("VideoPureSelectCandidate", candidate=6)
    show_selected = g.add("PreviewImage", title="candidate z_0^6")
    stack(g, 1, [purify, select, show_selected])
    stack(g, 2, [show_vote, show_input])
    stack(g, 3, [save, show_all])
    g.connect(model, "model", purify, "model")
    g.connect(clip, "images", purify, "images")
    g.connect(raft, "raft", purify, "raft")
    g.connect(classifier, "classifier", purify, "classifier")
    g.connect(clip, "images", show_input, "images")
    g.connect(purify, "vote_table", show_vote, "source")
    g.connect(purify, "purified", save, "images")
    g.connect(purify, "all_candidates", show_all, "images")
    g.connect(purify, "candidates", select, "candidates")
    g.connect(select, "frames", show_selected, "images")
    return g


def attack_compare(info: dict) -> UIGraph:
    """Clean vs attacked (PGD on the bare classifier) vs attacked + VideoPure."""
    g = graph(info)
    model, raft, classifier, clip = _sources(g, "Attack, then defend", (
        "PGD (epsilon 4/255, 10 steps) attacks the bare classifier; the clean and the attacked clip are classified "
        "without defence, and the attacked one again after VideoPure."))
    attack = g.add("VideoPurePGDAttack", epsilon=4.0, step_size=2.0, steps=10)
    clean_cls = g.add("VideoPureClassify", title="clean, no defence")
    adv_cls = g.add("VideoPureClassify", title="attacked, no defence")
    stack(g, 1, [attack, clean_cls, adv_cls])
    purify = g.add("VideoPurePurify", title="attacked + VideoPure", **WORLD_GUIDANCE)
    stack(g, 2, [purify])
    text_report = g.add("PreviewAny", title="attack report")
    text_clean = g.add("PreviewAny", title="clean: prediction")
    text_adv = g.add("PreviewAny", title="attacked: prediction")
    text_vote = g.add("PreviewAny", title="attacked + VideoPure: vote")
    stack(g, 3, [text_report, text_clean, text_adv, text_vote])
    show_clean = g.add("PreviewImage", title="clean frames")
    show_adv = g.add("PreviewImage", title="attacked frames")
    show_delta = g.add("PreviewImage", title="perturbation (x32, grey = 0)")
    save = g.add("SaveImage", title="purified frames", filename_prefix="videopure/attack_compare")
    for node, (column, y) in zip([show_clean, show_adv, show_delta, save], [(4, 0), (4, 360), (5, 0), (5, 360)]):
        g.place(node, (column * COL + 40, y))  # PreviewAny nodes in column 3 are 320 wide
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


def video_file(info: dict) -> UIGraph:
    """A video file in, the purified video file out: Load Video -> Get Video Components -> Fit Video -> Purify ->
    Create Video (at the input's frame rate, with its audio) -> Save Video."""
    g = graph(info)
    model, raft, classifier = _loaders(g)
    y = stack(g, 0, [model, raft, classifier])
    note(g, "Purify a video file", (
        "Load Video reads a file from ComfyUI's input folder (VideoPure puts its sample clip there; upload your "
        "own). Fit Video makes the sides multiples of 8 and keeps 16 frames; the purified frames become a video at "
        "the input's frame rate, with its audio. (Video Helper Suite's Load Video (Upload) and Video Combine work "
        "as well.)"), 0, y)
    load = g.add("LoadVideo", file=SAMPLE_VIDEO, size=(300, 420))  # room for the frontend's video player
    components = g.add("GetVideoComponents", size=(300, 130))  # 0.33 adds two outputs
    fit = g.add("VideoPureFitVideo", max_frames=16)
    purify = g.add("VideoPurePurify", **WORLD_GUIDANCE)
    create = g.add("CreateVideo", size=(300, 130))  # 0.33 adds a widget
    save = g.add("SaveVideo", filename_prefix="videopure/purified", size=(300, 360))
    show_vote = g.add("PreviewAny", title="vote")
    show_input = g.add("PreviewImage", title="input frames")
    stack(g, 1, [load, components])
    stack(g, 2, [fit, purify])
    stack(g, 3, [create, save])
    stack(g, 4, [show_vote, show_input])
    g.connect(load, "VIDEO", components, "video")
    g.connect(components, "images", fit, "images")
    g.connect(fit, "images", purify, "images")
    g.connect(model, "model", purify, "model")
    g.connect(raft, "raft", purify, "raft")
    g.connect(classifier, "classifier", purify, "classifier")
    g.connect(purify, "purified", create, "images")
    g.connect(components, "fps", create, "fps")
    g.connect(components, "audio", create, "audio")
    g.connect(create, "VIDEO", save, "video")
    g.connect(purify, "vote_table", show_vote, "source")
    g.connect(fit, "images", show_input, "images")
    return g


# name (API file) -> (template title: the file name the template browser shows, builder)
WORKFLOWS = {
    "videopure_one_node": ("VideoPure 1 Purify in one node", one_node),
    "videopure_paper_pipeline": ("VideoPure 2 Paper pipeline", paper_pipeline),
    "videopure_attack_compare": ("VideoPure 3 Attack then defend", attack_compare),
    "videopure_video_file": ("VideoPure 4 Purify a video file", video_file),
}


def render(info: dict | None = None) -> dict[Path, str]:
    """{path: file text} of every bundled workflow: the template (UI format) and the API format."""
    info = info or object_info()
    files = {}
    for name, (title, build) in WORKFLOWS.items():
        ui = build(info).ui()
        files[TEMPLATES / f"{title}.json"] = json.dumps(ui, indent=2) + "\n"
        files[HERE / "api" / f"{name}.json"] = json.dumps(ui_to_api(ui, info), indent=2) + "\n"
    return files


def write_sample_video(path: Path) -> None:
    """The sample clip of the video template: held-out world clip 1 (16 frames, 64x64) as an H.264 mp4 at 8 fps."""
    import av
    import numpy as np

    from videopure_core.world.generator import SPLIT_SEEDS, WorldSpec, make_clip

    clip = make_clip(1, SPLIT_SEEDS["test"] + 1, WorldSpec(frames=16))
    frames = (clip.video.clamp(0, 1) * 255).round().byte().numpy()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [str(p.relative_to(REPO)) for p, text in files.items() if not p.is_file() or p.read_text() != text]
        print("stale: " + ", ".join(stale) if stale else "workflows are up to date")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text)
        print(f"wrote {path.relative_to(REPO)}")
    sample = TEMPLATES / SAMPLE_VIDEO
    if not sample.is_file():  # encoders differ between machines: written once, then kept as it is
        write_sample_video(sample)
        print(f"wrote {sample.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
