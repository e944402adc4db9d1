import os
import sys
from pathlib import Path

import pytest
import torch

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # workflows.graph, the workflow builder the workflow tests use

# Nothing in the tests may touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread: every model in the tests is tiny, so a second thread gains little, and where the cores are
# shared (CI runners, a training job beside the tests) two OpenMP threads spin against each other: the
# full-gradient test took 120-380 s with two threads on a busy 2-core machine and 9 s with one.
torch.set_num_threads(1)


def constant_flow_fn(dx: float = 0.0, dy: float = 0.0):
    """A FlowFn returning the same flow (dx, dy) at every pixel."""

    def flow_fn(image1, image2):
        n, _, h, w = image1.shape
        flow = torch.empty(n, 2, h, w)
        flow[:, 0], flow[:, 1] = dx, dy
        return flow

    return flow_fn


@pytest.fixture(scope="session")
def tiny_models():
    from videopure_core.tiny import tiny_embedding, tiny_unet, tiny_vae

    return tiny_unet(0), tiny_vae(1), tiny_embedding(2)


@pytest.fixture(scope="session")
def tiny_diffusion(tiny_models):
    from videopure_core import MODELSCOPE_SCHEDULER_CONFIG, DiffusionModels

    unet, vae, emb = tiny_models
    return DiffusionModels(unet, vae, dict(MODELSCOPE_SCHEDULER_CONFIG), emb)


@pytest.fixture
def tiny_purifier(tiny_diffusion):
    from videopure_core import Purifier, PurifyConfig, Runtime

    def make(config=None, flow=constant_flow_fn(1.0, 0.0), runtime=None):
        return Purifier(tiny_diffusion, flow, config or PurifyConfig(), runtime or Runtime())

    return make


@pytest.fixture
def video():
    """One video (1, 3, 6, 32, 32) in [0,1]."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 6, 32, 32, generator=g)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep the pin above: a test that leaves torch on more threads (e.g. a CLI run with `--threads 2`) would slow
    every later test on a shared machine, so it fails here, and the pin is restored for the tests after it."""
    yield
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
        pytest.fail(f"this test left torch on {threads} threads (the suite pins 1: pass --threads 1 to CLI runs, or "
                    f"restore torch.set_num_threads(1))", pytrace=False)
