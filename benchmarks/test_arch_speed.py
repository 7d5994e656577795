"""Training step time of each architecture against the transformer's at the quick run's size
(tiny, d = 5, 21 points, batch 64, eager fp32), side by side in one process.
Reference = the transformer; a ratio below 1 means the architecture is slower."""

import time

import pytest
import torch

from minicl.model import MODELS, ModelConfig, build_model
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import TrainStep, make_optimizer

D, N, BATCH = 5, 21, 64


def step_of(arch: str):
    torch.manual_seed(0)
    model = build_model(ModelConfig(D, N, n_embd=64, n_layer=3, n_head=2, arch=arch))
    task = build_task("linear", n_dims=D)
    sampler = PromptSampler(task, N, make_generators(0))
    step = TrainStep(model, make_optimizer(model, 1e-3), task, N, compile=False, amp=False)
    return lambda: step(*sampler.sample(BATCH), N), model.num_parameters()


def seconds_per_step(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


@pytest.mark.parametrize("arch", [a for a in MODELS if a != "transformer"])
def test_architecture_step_against_the_transformer(benchmark, report, arch):
    (ours, params), (reference, ref_params) = step_of(arch), step_of("transformer")
    ours_s = ref_s = 0.0
    for _ in range(3):  # interleaved, so that drift on a busy machine hits both alike
        ours()
        ours_s += seconds_per_step(ours, 10) / 3
        reference()
        ref_s += seconds_per_step(reference, 10) / 3
    benchmark.pedantic(ours, rounds=5, iterations=1)
    report(
        f"train step {arch} vs transformer (quick size, fp32)",
        ours_s * 1e3,
        ref_s * 1e3,
        unit="ms",
        parameters=params,
        transformer_parameters=ref_params,
    )
