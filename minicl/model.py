"""A GPT-2 style causal transformer that reads prompts of interleaved (x, y) tokens.

Imports torch only, so research code can `import minicl.model` without Hydra or sklearn.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

POS_EMBS = ("learned", "rope", "none")
Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin tables


@dataclass
class ModelConfig:
    n_dims: int  # width of x
    n_positions: int = 101  # prompt points the model is built for (2 * n_positions tokens)
    n_embd: int = 256
    n_layer: int = 12
    n_head: int = 8
    dropout: float = 0.0
    pos_emb: str = "learned"

    def __post_init__(self):
        for name in ("n_dims", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"ModelConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.pos_emb not in POS_EMBS:
            raise ValueError(f"ModelConfig.pos_emb must be one of {POS_EMBS}, got {self.pos_emb!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(
                f"pos_emb='rope' needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}"
            )


def check_prompt(xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None, n_dims: int | None = None) -> torch.Tensor:
    """Raise ValueError unless xs is (B, N, D), ys (B, N) and queries like xs, all floating point;
    returns the queries (xs when none are given). Every predictor checks its prompts with this."""
    if xs.dim() != 3 or (n_dims is not None and xs.shape[-1] != n_dims):
        raise ValueError(f"xs must have shape (B, N, {n_dims or 'D'}), got {tuple(xs.shape)}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape {tuple(xs.shape[:2])} to match xs, got {tuple(ys.shape)}")
    if queries is not None and queries.shape != xs.shape:
        raise ValueError(f"queries must have the shape of xs {tuple(xs.shape)}, got {tuple(queries.shape)}")
    if not (xs.is_floating_point() and ys.is_floating_point()):
        raise ValueError(f"xs and ys must be floating point, got {xs.dtype} and {ys.dtype}")
    return xs if queries is None else queries


def rope_tables(positions: torch.Tensor, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of rotary embeddings at `positions` (T,), each (T, head_size // 2)."""
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_size, 2, device=positions.device).float() / head_size)
    angles = positions.float()[:, None] * inv_freq  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, hs); rotates the pairs (x[..., :hs/2], x[..., hs/2:])
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, keep: slice | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), or only the tokens `keep` (their queries) when it is given."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if keep is not None:
            q, mask = q[:, :, keep], mask[keep]
        if x.device.type == "cpu" and q.dtype == torch.bfloat16:
            # CPU attention kernels are several times slower in bf16 than in fp32 (backward above all),
            # while the projections gain from bf16: there, attend in fp32.
            with torch.autocast("cpu", enabled=False):
                y = self.attend(q.float(), k.float(), v.float(), mask).to(q.dtype)
        else:
            y = self.attend(q, k, v, mask)
        y = y.transpose(1, 2).reshape(B, -1, C)
        return self.resid_dropout(self.c_proj(y))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None)


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


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, keep: slice | None = None) -> torch.Tensor:
        h = self.attn(self.ln_1(x), rope, mask, keep)
        x = (x if keep is None else x[:, keep]) + h
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """predict(xs (B, N, D), ys (B, N)) -> (B, N): output i predicts ys[:, i] from pairs < i and xs[:, i]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.n_dims, config.n_embd)
        if config.pos_emb == "learned":
            self.wpe = nn.Embedding(2 * config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.read_out = nn.Linear(config.n_embd, 1)
        # GPT-2 initialisation for the backbone; read-in and read-out keep nn.Linear's default, as
        # in the original (they sat outside its GPT2Model), which also starts in-context learning sooner.
        self.h.apply(self._init_weights)
        if config.pos_emb == "learned":
            self._init_weights(self.wpe)
        for name, p in self.h.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)

    def check_prompt(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> None:
        """check_prompt(), plus the model's own width and, for learned positions, length."""
        c = self.config
        check_prompt(xs, ys, queries, n_dims=c.n_dims)
        if c.pos_emb == "learned" and xs.shape[1] > c.n_positions:
            raise ValueError(
                f"prompt has {xs.shape[1]} points but the model has learned positions for only "
                f"n_positions={c.n_positions}"
            )

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) predictions; with `queries` (B, N, D), output i is for queries[:, i] instead of xs[:, i],
        still from the pairs before i: one pass gives what N passes with one swapped query would."""
        if not torch.compiler.is_compiling():
            self.check_prompt(xs, ys, queries)
        B, N, _ = xs.shape
        # y enters as the token (y, 0, ..., 0) through read_in: y * W[:, 0] + b
        ex = self.read_in(xs)  # (B, N, C)
        ey = ys.unsqueeze(-1).to(ex.dtype) * self.read_in.weight[:, 0].to(ex.dtype) + self.read_in.bias.to(ex.dtype)
        h = torch.stack((ex, ey), dim=2).view(B, 2 * N, -1)  # x1, y1, x2, y2, ... (B, T, C)
        positions = torch.arange(2 * N, device=xs.device)
        mask = None
        if queries is not None:
            # query i sits at x_i's position, sees the tokens before x_i and itself, and nothing sees it
            h = torch.cat((h, self.read_in(queries)), dim=1)  # (B, 3N, C)
            positions = torch.cat((positions, positions[::2]))
            mask = torch.ones(3 * N, 3 * N, dtype=torch.bool, device=xs.device).tril()
            mask[2 * N :] = positions[None, :] < positions[2 * N :, None]
            mask[2 * N :, 2 * N :] = torch.eye(N, dtype=torch.bool, device=xs.device)
        rope = None
        if self.config.pos_emb == "learned":
            h = h + self.wpe(positions)
        elif self.config.pos_emb == "rope":
            rope = rope_tables(positions, self.config.n_embd // self.config.n_head)
        h = self.drop(h)
        for block in self.h[:-1]:
            h = block(h, rope, mask)
        # only x (or query) tokens predict, so the last block computes nothing else
        if mask is None:
            mask = torch.ones(2 * N, 2 * N, dtype=torch.bool, device=xs.device).tril()
        h = self.h[-1](h, rope, mask, keep=slice(2 * N, None) if queries is not None else slice(0, None, 2))
        h = self.ln_f(h)
        with torch.autocast(device_type=h.device.type, enabled=False):  # read-out in fp32 for the loss
            return self.read_out(h.float()).squeeze(-1)  # (B, N)

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        return self(xs, ys, queries)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
