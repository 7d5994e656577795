"""CPU kernels the model uses where ATen's own measured slow: GPT-2's tanh GELU for CPUs running
ATen's AVX2 kernels, and attention in fp32 under CPU bf16 autocast. Imports torch only."""

import math

import torch
import torch.nn.functional as F


class TanhGELU(torch.autograd.Function):
    """GPT-2's GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), computed as
    x sigmoid(2u) (the same function: 0.5 (1 + tanh(u)) = sigmoid(2u)). With ATen's AVX2 kernels tanh
    is several times slower than sigmoid, which made ATen's tanh GELU the largest cost of a small
    fp32 CPU training step there; this form and its hand-written gradient use one sigmoid. With
    AVX-512 kernels the two measured about as fast (benchmarks/test_train_speed.py times both)."""

    C2 = 2 * math.sqrt(2 / math.pi)  # 2u = C2 (x + A x^3)
    A = 0.044715

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        s = (x * x).mul_(TanhGELU.C2 * TanhGELU.A).add_(TanhGELU.C2).mul_(x).sigmoid_()
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        # d/dx x s(2u) = s + x s (1 - s) d(2u)/dx, with d(2u)/dx = C2 (1 + 3 A x^2)
        u = (x * x).mul_(3 * TanhGELU.C2 * TanhGELU.A).add_(TanhGELU.C2).mul_(x).mul_(s)
        return u.addcmul_(u, s, value=-1).add_(s).mul_(grad)  # u (1 - s) + s, with no new tensor


SIGMOID_GELU = torch.backends.cpu.get_cpu_capability() == "AVX2"  # where TanhGELU measured faster


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GELU: TanhGELU on CPUs running ATen's AVX2 kernels in eager mode, ATen's kernel
    elsewhere (AVX-512 CPUs, CUDA, compiled)."""
    if SIGMOID_GELU and x.device.type == "cpu" and not torch.compiler.is_compiling():
        return TanhGELU.apply(x)
    return F.gelu(x, approximate="tanh")


def attend(attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """attention(q, k, v, mask), in fp32 for bf16 inputs on the CPU: CPU attention kernels are several
    times slower in bf16 than in fp32 (backward above all), while the projections gain from bf16."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return attention(q, k, v, mask)
    with torch.autocast("cpu", enabled=False):
        return attention(q.float(), k.float(), v.float(), mask).to(q.dtype)
