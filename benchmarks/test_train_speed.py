"""Training step speed: minicl against the original's GPT2Model-based loop at the paper's final
prompt size (d = 20, 41 points, batch 64), side by side in one process."""

import time

import pytest
import torch

from minicl.common import bf16_is_fast
from minicl.kernels import SIGMOID_GELU, TanhGELU

pytest.importorskip("transformers", reason="the reference model needs `pip install -e .[reference]`")
from profile_step import BATCH, SIZES, D, N, minicl_step  # noqa: E402

from tests.reference import OriginalModel, original_step  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# (compile mode or None for eager, amp) variants of minicl's step. CPU: eager fp32, and eager bf16
# where the CPU has native bf16 (what trainer.amp=null chooses there, common.bf16_is_fast). CUDA: eager
# and compiled in fp32 and bf16, and the bf16 step under the other compile modes.
VARIANTS = [(None, False)] + (
    [
        ("default", False),
        (None, True),
        ("default", True),
        ("max-autotune-no-cudagraphs", True),
        ("reduce-overhead", True),
    ]
    if DEVICE.type == "cuda"
    else [(None, True)]
    if bf16_is_fast(DEVICE)
    else []
)
CPU_DEFAULT = (None, bf16_is_fast(DEVICE))  # the fastest CPU step: `trainer.device=cpu trainer.amp=null`
STEPS = {"cpu": {"tiny": 20, "small": 6, "standard": 3}, "cuda": {"tiny": 100, "small": 100, "standard": 100}}[
    DEVICE.type
]


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, n: int) -> float:
    """Seconds per call of fn over n calls."""
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - start) / n


@pytest.mark.parametrize("mode, amp", VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize("size", list(SIZES))
def test_training_step(benchmark, report, size, mode, amp):
    if DEVICE.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    layers, width, heads = SIZES[size]
    torch.manual_seed(0)
    reference = OriginalModel(D, 101, width, layers, heads).to(DEVICE)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-4)
    step = minicl_step(size, DEVICE, amp, mode)

    first = timed(step, 1)  # includes compilation
    n = STEPS[size]
    ref_s = minicl_s = 0.0
    for _ in range(2):  # interleave so that drift on a noisy machine hits both alike
        timed(lambda: original_step(reference, ref_opt, BATCH, N, D, DEVICE), 1)
        ref_s += timed(lambda: original_step(reference, ref_opt, BATCH, N, D, DEVICE), n) / 2
        timed(step, 1)
        minicl_s += timed(step, n) / 2
    benchmark.pedantic(step, rounds=n, iterations=1)
    report(
        f"train step {size} ({mode or 'eager'}, {'bf16' if amp else 'fp32'}) on {DEVICE.type}",
        minicl_s * 1e3,
        ref_s * 1e3,
        unit="ms",
        compile_s=max(first - minicl_s, 0.0),
        steps_per_s=1 / minicl_s,
        tokens_per_s=BATCH * 2 * N / minicl_s,
    )
    assert minicl_s < ref_s, (
        f"minicl {minicl_s * 1e3:.1f} ms per step is not faster than the reference {ref_s * 1e3:.1f} ms"
    )
    if DEVICE.type == "cpu" and size == "small" and (mode, amp) == CPU_DEFAULT:  # the speed issue's CPU target
        assert ref_s / minicl_s >= 1.5, (
            f"the default CPU step runs {ref_s / minicl_s:.2f}x the reference's steps/s, target 1.5x"
        )


def test_cpu_gelu_against_aten(benchmark, report):
    """minicl's CPU GELU (TanhGELU, one sigmoid) against ATen's tanh GELU, forward and backward, at
    the small model's MLP activation size (batch 64, 82 tokens, width 4 x 128)."""
    x = torch.randn(BATCH, 2 * N, 4 * SIZES["small"][1], requires_grad=True)
    ours = lambda: TanhGELU.apply(x).sum().backward()  # noqa: E731
    aten = lambda: torch.nn.functional.gelu(x, approximate="tanh").sum().backward()  # noqa: E731
    for fn in (ours, aten):  # warm up both
        fn()
    ours_s = aten_s = 0.0
    for _ in range(3):  # interleaved
        aten_s += timed(aten, 20) / 3
        ours_s += timed(ours, 20) / 3
    benchmark.pedantic(ours, rounds=20, iterations=1)
    report(
        "GELU fwd+bwd (64, 82, 512) on cpu: TanhGELU vs ATen tanh",
        ours_s * 1e3,
        aten_s * 1e3,
        unit="ms",
        capability=torch.backends.cpu.get_cpu_capability(),
        model_uses="TanhGELU" if SIGMOID_GELU else "ATen",
    )
