"""Where a CPU training step spends its time: `python benchmarks/profile_step.py [size] [fp32|bf16]`.

Profiles minicl's training step (`minicl_step`, which benchmarks/test_train_speed.py times: d = 20,
41 points, batch 64, Adam) with torch.profiler and prints the operators by their own CPU time.
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from minicl.model import ModelConfig, Transformer
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import TrainStep, make_optimizer

SIZES = {"tiny": (3, 64, 2), "small": (6, 128, 4), "standard": (12, 256, 8)}  # layers, width, heads
D, N, BATCH = 20, 41, 64  # the paper's final prompt size


def minicl_step(size: str, device: torch.device, amp: bool, compile_mode: str | None = None):
    """One training step of minicl's model of `size` on fresh prompts, as a zero-argument callable."""
    layers, width, heads = SIZES[size]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(D, 101, width, layers, heads)).to(device)
    task = build_task("linear", n_dims=D)
    sampler = PromptSampler(task, N, make_generators(0, device))
    step = TrainStep(
        model,
        make_optimizer(model, 1e-4),
        task,
        N,
        compile=compile_mode is not None,
        amp=amp,
        compile_mode=compile_mode or "default",
    )
    return lambda: step(*sampler.sample(BATCH), N)


def main(size: str = "small", precision: str = "fp32", steps: int = 10) -> None:
    if size not in SIZES or precision not in ("fp32", "bf16"):
        raise SystemExit(f"usage: profile_step.py [{'|'.join(SIZES)}] [fp32|bf16], got {size!r} {precision!r}")
    step = minicl_step(size, torch.device("cpu"), amp=precision == "bf16")
    for _ in range(3):  # warm up
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"{size} model, {precision}, {steps} steps, {torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main(*sys.argv[1:3])
