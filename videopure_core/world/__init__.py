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
from .models import WORLD_PURIFY_OPTIONS
