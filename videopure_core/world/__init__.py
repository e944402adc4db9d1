"""The small "trained world": a seeded procedural video generator (`generator`) and the models trained on it.

`videopure_core.world.generator` renders 12-class clips (3 shapes x 4 motion directions) with exact ground-truth
optical flow; see its module docstring for the world and the class layout.
"""

from .generator import (
    CLASSES,
    DIRECTIONS,
    SHAPES,
    SPLIT_SEEDS,
    Batch,
    Clip,
    ClipParams,
    WorldSpec,
    load_clip_pngs,
    make_batch,
    make_clip,
    make_split,
    render,
    sample_params,
    save_clip_pngs,
    split_seeds,
)

WORLD_OPTIONS: dict = {"lambda_reference": (32, 28, 28)}
"""VideoPure's options in the small world (`PurifyConfig().with_options(**WORLD_OPTIONS)`): the paper's
hyperparameters, with the guidance step rescaled from the paper's 32x28x28 latent to this world's 16x16x16 (both
losses are means, so unscaled steps would be ~6x larger per element here; see Guidance.lambda_reference)."""
