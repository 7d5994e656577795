"""Train with bf16 autocast's numerics on a CPU without native bf16, to measure what bf16 costs in
accuracy (not in speed) where it would otherwise take hours: on an AVX2-only CPU a bf16 training
step of the quick run's model took 8x as long as an fp32 one.

    python benchmarks/emulated_bf16.py task=linear experiment=quick trainer.amp=true hydra.run.dir=runs/lin_bf16

The run is an ordinary `trainer.amp=true` run (CPU autocast decides, as always, which ops run in
bf16), except that each bf16 linear layer is computed as a native bf16 GEMM computes it: inputs,
weights and bias rounded to bf16, products accumulated in fp32, the result rounded to bf16, and
likewise for its gradients. `test_emulation_matches_native_bf16` checks it against real autocast.
"""

import contextlib
import sys

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch.overrides import TorchFunctionMode

from minicl.config import CONF, register_schemas
from minicl.train import train


def bf16_valued(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.to(torch.bfloat16).float()


class EmulatedBF16(TorchFunctionMode):
    """F.linear under CPU bf16 autocast, computed in fp32 on bf16-rounded operands."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and torch.is_autocast_enabled("cpu"):
            x, weight, *bias = args
            bias = kwargs.get("bias", bias[0] if bias else None)
            with torch.autocast("cpu", enabled=False):
                return F.linear(bf16_valued(x), bf16_valued(weight), bf16_valued(bias)).to(torch.bfloat16)
        return func(*args, **kwargs)


def test_emulation_matches_native_bf16():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    x = torch.randn(32, 16)
    grads = []
    for mode in (EmulatedBF16(), contextlib.nullcontext()):
        layer.zero_grad()
        with mode, torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        out.float().pow(2).mean().backward()
        grads.append([out.float()] + [p.grad.clone() for p in layer.parameters()])
    for emulated, native in zip(*grads):
        torch.testing.assert_close(emulated, native, rtol=2e-2, atol=2e-2)


def main(overrides: list[str]) -> None:
    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    if run_dir is None:
        raise SystemExit("give hydra.run.dir=DIR")
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="train", overrides=[o for o in overrides if not o.startswith("hydra.")])
    print("bf16 autocast emulated in fp32 (benchmarks/emulated_bf16.py)")
    with EmulatedBF16():
        train(cfg, run_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
