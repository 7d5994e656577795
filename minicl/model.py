"""Causal sequence models that read prompts of interleaved (x, y) tokens: the GPT-2 style
transformer (the paper's), and for comparison the same transformer with linear attention, a
stacked LSTM and a Mamba-style selective state-space model. All share the read-in, the read-out
and the call shape `model(xs, ys, queries=None)`; `build_model(config)` picks by `config.arch`.

Imports torch only, so research code can `import minicl.model` without Hydra or sklearn.
"""

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal, Protocol, get_args, get_origin

import torch
import torch.nn as nn
import torch.nn.functional as F

from minicl.kernels import attend, gelu

Arch = Literal["transformer", "linear_attention", "lstm", "mamba", "mambaformer", "lsa"]  # the keys of MODELS
PosEmb = Literal["learned", "rope", "none"]
Mask = Literal["causal", "prefix"]
PREFIX_ARCHS = ("transformer", "lsa")  # the architectures that take mask="prefix"
Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin tables


@dataclass
class ModelConfig:
    n_dims: int  # width of x
    n_positions: int = 101  # prompt points the model is built for (2 * n_positions tokens)
    n_embd: int = 256
    n_layer: int = 12
    n_head: int = 8
    dropout: float = 0.0
    pos_emb: PosEmb = "learned"  # transformer and linear_attention; the recurrent ones have no positions
    arch: Arch = "transformer"
    d_state: int = 16  # mamba: state size per channel
    d_conv: int = 4  # mamba: width of the causal convolution
    expand: int = 2  # mamba: inner width / n_embd
    # who the context pairs see: the pairs up to themselves (causal), or every pair of the context
    # (prefix: one pass per prefix length, as Ding et al. 2024's prefixLM); transformer and lsa
    mask: Mask = "causal"

    def __post_init__(self):
        for f in fields(self):
            if get_origin(f.type) is Literal and getattr(self, f.name) not in get_args(f.type):
                raise ValueError(
                    f"ModelConfig.{f.name} must be one of {get_args(f.type)}, got {getattr(self, f.name)!r}"
                )
        for name in ("n_dims", "n_positions", "n_embd", "n_layer", "n_head", "d_state", "d_conv", "expand"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"ModelConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"pos_emb='rope' needs an even head size, got n_embd/n_head={self.n_embd // self.n_head}")
        if self.mask == "prefix" and self.arch not in PREFIX_ARCHS:
            raise ValueError(f"ModelConfig.mask='prefix' is built for arch in {PREFIX_ARCHS}, not {self.arch!r}")
        if self.pos_emb == "rope" and self.arch == "linear_attention":
            raise ValueError(
                "pos_emb='rope' is not supported with arch='linear_attention' (rotating q and k "
                "before its feature map loses their relative position, after it their positivity); "
                "use learned or none"
            )

    @property
    def recurrent(self) -> bool:
        return issubclass(MODELS[self.arch], RecurrentModel)

    @property
    def max_points(self) -> int | None:
        """The longest prompt the model reads: n_positions for learned positions, else no limit (None)."""
        return self.n_positions if self.pos_emb == "learned" and MODELS[self.arch].positions else None


class Predictor(Protocol):
    """Everything that predicts, every architecture and every baseline: output i is the prediction
    at queries[:, i] (xs[:, i] when queries is None) from the pairs before i only, (B, N)."""

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor: ...


def check_prompt(
    xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None, config: "ModelConfig | None" = None
) -> torch.Tensor:
    """Raise ValueError unless xs is (B, N, D), ys (B, N) and queries like xs, all floating point,
    and, given a model's config, D its n_dims and N within its learned positions; returns the
    queries (xs when none are given). Every predictor checks its prompts with this."""
    n_dims = None if config is None else config.n_dims
    if xs.dim() != 3 or (n_dims is not None and xs.shape[-1] != n_dims):
        raise ValueError(f"xs must have shape (B, N, {n_dims or 'D'}), got {tuple(xs.shape)}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape {tuple(xs.shape[:2])} to match xs, got {tuple(ys.shape)}")
    if queries is not None and queries.shape != xs.shape:
        raise ValueError(f"queries must have the shape of xs {tuple(xs.shape)}, got {tuple(queries.shape)}")
    if not (xs.is_floating_point() and ys.is_floating_point()):
        raise ValueError(f"xs and ys must be floating point, got {xs.dtype} and {ys.dtype}")
    if config is not None and config.max_points is not None and xs.shape[1] > config.max_points:
        raise ValueError(
            f"prompt has {xs.shape[1]} points but the model has learned positions for only "
            f"n_positions={config.n_positions}"
        )
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

    def forward(
        self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, keep: slice | None = None
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), or only the tokens `keep` (their queries) when it is given."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if keep is not None:
            q, mask = q[:, :, keep], None if mask is None else mask[keep]
        y = attend(self.attend, q, k, v, mask).transpose(1, 2).reshape(B, -1, C)
        return self.resid_dropout(self.c_proj(y))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None)


class LinearAttention(CausalSelfAttention):
    """Causal linear attention (Katharopoulos et al. 2020): the softmax of q.k replaced by phi(q).phi(k)
    with phi = elu + 1 > 0, each output normalised by its row's sum. Computed in the parallel form
    (a masked T x T product), which takes the same masks as softmax attention, `queries` included."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        wide = torch.promote_types(v.dtype, torch.float32)  # sums of positive scores: at least fp32
        q, k = F.elu(q.to(wide)) + 1, F.elu(k.to(wide)) + 1
        scores = (q @ k.transpose(-1, -2)) * mask  # (B, H, Tq, T), positive where allowed
        scores = scores / scores.sum(-1, keepdim=True)  # every row allows at least its own token
        scores = F.dropout(scores, self.dropout, self.training)
        return (scores @ v.to(wide)).to(v.dtype)


ATTENTION = {"transformer": CausalSelfAttention, "linear_attention": LinearAttention}


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
        self.attn = ATTENTION[config.arch](config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rope: Rope | None, mask: torch.Tensor | None, keep: slice | None = None
    ) -> torch.Tensor:
        h = self.attn(self.ln_1(x), rope, mask, keep)
        x = (x if keep is None else x[:, keep]) + h
        return x + self.mlp(self.ln_2(x))


class PromptModel(nn.Module):
    """What every architecture shares. x enters through `read_in` (D -> width); y as the token
    (y, 0, ..., 0) through the same map; tokens interleave x1, y1, x2, y2, ...; a final LayerNorm and
    `read_out` (width -> 1) at each x token give the prediction. Subclasses build those three modules
    and the layers between them, and define `forward(xs, ys, queries=None) -> (B, N)`, the call
    shape of every predictor."""

    config: ModelConfig
    read_in: nn.Linear
    ln_f: nn.LayerNorm
    read_out: nn.Linear
    positions: ClassVar[bool] = True  # reads positions (learned ones bound the prompt's length)
    trained_on: str | None = None  # the task name of its training run, when loaded or trained by minicl

    def tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """x1, y1, x2, y2, ... through read_in: (B, 2N, width)."""
        B, N, _ = xs.shape
        ex = self.read_in(xs)  # (B, N, W)
        # y enters as the token (y, 0, ..., 0) through read_in: y * W[:, 0] + b
        ey = ys.unsqueeze(-1).to(ex.dtype) * self.read_in.weight[:, 0].to(ex.dtype) + self.read_in.bias.to(ex.dtype)
        return torch.stack((ex, ey), dim=2).view(B, 2 * N, ex.shape[-1])

    def read(self, h: torch.Tensor) -> torch.Tensor:
        """Predictions (B, N) from the final hidden states (B, N, width) of the x (or query) tokens."""
        h = self.ln_f(h)
        with torch.autocast(device_type=h.device.type, enabled=False):  # read-out in fp32 for the loss
            return self.read_out(h.to(self.read_out.weight.dtype)).squeeze(-1)

    def after_prompt(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B, M) predictions for queries (B, M, D), each from all N pairs of the prompt: here one
        prompt per query (the transformer reads the prompt once for all of them)."""
        B, N, D = xs.shape
        M = queries.shape[1]
        prompts = torch.cat((xs.repeat_interleave(M, 0), queries.reshape(B * M, 1, D)), dim=1)  # (B M, N + 1, D)
        labels = torch.cat((ys.repeat_interleave(M, 0), ys.new_zeros(B * M, 1)), dim=1)
        return self(prompts, labels)[:, -1].view(B, M)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Transformer(PromptModel):
    """model(xs (B, N, D), ys (B, N)) -> (B, N): output i predicts ys[:, i] from pairs < i and xs[:, i].
    arch='transformer' is GPT-2 exactly; arch='linear_attention' swaps its attention for LinearAttention."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch not in ATTENTION:
            raise ValueError(
                f"Transformer builds arch {tuple(ATTENTION)}, not {config.arch!r}: use build_model(config)"
            )
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

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) predictions; with `queries` (B, N, D), output i is for queries[:, i] instead of xs[:, i],
        still from the pairs before i: one pass gives what N passes with one swapped query would."""
        if not torch.compiler.is_compiling():
            check_prompt(xs, ys, queries, self.config)
        N = xs.shape[1]
        if self.config.mask == "prefix":  # a pass per prefix: pairs see the whole prefix, so no pass serves two
            queries = xs if queries is None else queries
            return torch.cat([self.after_prompt(xs[:, :i], ys[:, :i], queries[:, i : i + 1]) for i in range(N)], 1)
        h = self.tokens(xs, ys)  # (B, T, C)
        positions = torch.arange(2 * N, device=xs.device)
        if queries is None:  # only x tokens predict, so the last block computes nothing else
            return self.predict_at(h, positions, None, keep=slice(0, None, 2))
        # query i sits at x_i's position, sees the tokens before x_i and itself, and nothing sees it
        h = torch.cat((h, self.read_in(queries)), dim=1)  # (B, 3N, C)
        positions = torch.cat((positions, positions[::2]))
        mask = torch.ones(3 * N, 3 * N, dtype=torch.bool, device=xs.device).tril()
        mask[2 * N :] = positions[None, :] < positions[2 * N :, None]
        mask[2 * N :, 2 * N :] = torch.eye(N, dtype=torch.bool, device=xs.device)
        return self.predict_at(h, positions, mask, keep=slice(2 * N, None))

    def after_prompt(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B, M) predictions for queries (B, M, D), each from all N pairs of the prompt, in one pass:
        every query sits at the position after the prompt, sees the prompt and itself, and nothing sees it."""
        h, positions, mask = self.prompt_then_queries(xs, ys, queries)
        return self.predict_at(h, positions, mask, keep=slice(h.shape[1] - queries.shape[1], None))

    def prompt_then_queries(
        self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tokens (B, 2N + M, C) of the prompt followed by M queries, their positions, and who
        sees whom: the prompt's tokens see those before them (causal) or the whole prompt (prefix),
        each query sees the prompt and itself."""
        N, M = xs.shape[1], queries.shape[1]
        check_prompt(xs, ys, None, self.config)
        if self.config.max_points is not None and N + 1 > self.config.max_points:
            raise ValueError(
                f"a prompt of {N} pairs leaves no position for its queries (n_positions={self.config.n_positions})"
            )
        h = torch.cat((self.tokens(xs, ys), self.read_in(queries)), dim=1)  # (B, 2N + M, C)
        positions = torch.cat((torch.arange(2 * N, device=xs.device), torch.full((M,), 2 * N, device=xs.device)))
        mask = torch.ones(2 * N + M, 2 * N + M, dtype=torch.bool, device=xs.device).tril()
        if self.config.mask == "prefix":
            mask[: 2 * N, : 2 * N] = True
        mask[2 * N :, 2 * N :] = torch.eye(M, dtype=torch.bool, device=xs.device)
        return h, positions, mask

    def predict_at(
        self, h: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, keep: slice
    ) -> torch.Tensor:
        """Tokens h (B, T, C) at `positions` through the blocks (causal, or `mask` (T, T): who sees whom);
        the predictions at the tokens `keep`."""
        h, rope = self.embed(h, positions)
        for block in self.h[:-1]:
            h = block(h, rope, mask)
        if mask is None:
            mask = torch.ones(len(positions), len(positions), dtype=torch.bool, device=h.device).tril()
        return self.read(self.h[-1](h, rope, mask, keep=keep))

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        """Tokens (B, T, C) at `positions` with their learned positions added, or the rope tables."""
        rope = None
        if self.config.pos_emb == "learned":
            h = h + self.wpe(positions)
        elif self.config.pos_emb == "rope":
            rope = rope_tables(positions, self.config.n_embd // self.config.n_head)
        return self.drop(h), rope

    def hidden_states(self, xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream (B, N, C) at the x tokens, where each prediction is read: after the
        embedding and after each block."""
        check_prompt(xs, ys, None, self.config)
        if self.config.mask == "prefix":  # the query token of each prefix's own pass
            passes = [self.states_after(xs[:, :i], ys[:, :i], xs[:, i : i + 1]) for i in range(xs.shape[1])]
            return [torch.cat(layer, 1) for layer in zip(*passes)]
        h, rope = self.embed(self.tokens(xs, ys), torch.arange(2 * xs.shape[1], device=xs.device))
        states = [h[:, ::2]]
        for block in self.h:
            h = block(h, rope, None)
            states.append(h[:, ::2])
        return states

    def states_after(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream (B, M, C) at M queries after the prompt: after the embedding and each block."""
        h, positions, mask = self.prompt_then_queries(xs, ys, queries)
        h, rope = self.embed(h, positions)
        states = [h[:, -queries.shape[1] :]]
        for block in self.h:
            h = block(h, rope, mask)
            states.append(h[:, -queries.shape[1] :])
        return states


def lstm_width(n_embd: int) -> int:
    """The LSTM's hidden size: 8 H^2 weights per layer match the transformer's 12 n_embd^2
    (H = sqrt(1.5) n_embd, to a multiple of 8)."""
    return 8 * round(math.sqrt(1.5) * n_embd / 8)


class RecurrentModel(PromptModel):
    """A model whose layers map the token sequence (B, T, W) -> (B, T, W) causally, with no
    positions: prompts of any length. `queries` run one pass per query (exact, N times the work)."""

    positions = False

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            check_prompt(xs, ys, queries, self.config)
        if queries is not None:
            return self.one_query_at_a_time(xs, ys, queries)
        return self.read(self.mix(self.tokens(xs, ys))[:, ::2])

    def one_query_at_a_time(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Output i from the prompt x1, y1, ..., y_{i-1}, queries_i: a recurrent state cannot be
        shared by N queries in one pass as the transformer's mask allows."""
        preds = []
        for i in range(xs.shape[1]):
            prefix = torch.cat((xs[:, :i], queries[:, i : i + 1]), dim=1)
            preds.append(self.read(self.mix(self.tokens(prefix, ys[:, : i + 1]))[:, -2:-1]))  # at the query's token
        return torch.cat(preds, dim=1)


class LSTM(RecurrentModel):
    """A stacked LSTM (torch's nn.LSTM) of n_layer layers of width lstm_width(n_embd)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        width = lstm_width(config.n_embd)
        self.read_in = nn.Linear(config.n_dims, width)
        self.rnn = nn.LSTM(
            width,
            width,
            num_layers=config.n_layer,
            batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.ln_f = nn.LayerNorm(width, eps=1e-5)
        self.read_out = nn.Linear(width, 1)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        # the recurrence in the parameters' precision under autocast too, as Mamba's scan: its state
        # is carried over all 2N tokens
        with torch.autocast(h.device.type, enabled=False):
            return self.rnn(h.to(self.read_in.weight.dtype))[0]


@torch.compiler.disable  # torch.compile would unroll the loop: 2 n_layer x 2N steps (4848 at paper size)
def selective_scan(
    u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, h_0 = 0, step by step over t.
    u, dt (B, T, E); A (E, N); B, C (B, T, N) -> y (B, T, E).
    Each step builds its own (B, E, N) terms: precomputing them for all t (T times the memory, out of
    cache) measured 1.6x slower on CPU, and 1.8x with a hand-written backward."""
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])  # (B, E, N)
    ys = []
    # unbind, not indexing: the gradient of x[:, t] would be a zero (B, T, ...) tensor per step
    for u_t, dt_t, B_t, C_t in zip(u.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        h = torch.exp(dt_t.unsqueeze(-1) * A) * h + (dt_t * u_t).unsqueeze(-1) * B_t.unsqueeze(1)
        ys.append(h @ C_t.unsqueeze(-1))  # (B, E, 1)
    return torch.cat(ys, dim=-1).transpose(1, 2)


class MambaMixer(nn.Module):
    """Mamba's selective state-space layer (Gu & Dao 2023): input-dependent dt, B and C, a diagonal
    A = -exp(A_log), a causal depthwise convolution and a SiLU gate; the scan runs in fp32."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E, N = config.expand * config.n_embd, config.d_state
        self.dt_rank = math.ceil(config.n_embd / 16)
        self.in_proj = nn.Linear(config.n_embd, 2 * E, bias=False)
        self.conv = nn.Conv1d(E, E, config.d_conv, groups=E, padding=config.d_conv - 1)
        self.x_proj = nn.Linear(E, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, E)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float)).repeat(E, 1))  # A = -1, ..., -N
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, config.n_embd, bias=False)
        # Mamba's dt initialisation: softplus(bias) log-uniform in [1e-3, 1e-1]
        dt = torch.exp(torch.rand(E) * (math.log(1e-1) - math.log(1e-3)) + math.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # the inverse of softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)"""
        T, N = x.shape[1], self.A_log.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, E) each
        u = F.silu(self.conv(u.transpose(1, 2))[..., :T].transpose(1, 2))  # padded both sides: keep the causal T
        dt, B, C = self.x_proj(u).split([self.dt_rank, N, N], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B, T, E)
        u, dt, B, C = (t.to(self.A_log.dtype) for t in (u, dt, B, C))  # the parameters' precision, not autocast's
        y = selective_scan(u, dt, -self.A_log.exp(), B, C) + self.D * u
        return self.out_proj(y.to(z.dtype) * F.silu(z))


class MambaBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mixer = MambaMixer(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mixer(self.ln(x)))


class Mamba(RecurrentModel):
    """2 n_layer pre-LayerNorm residual Mamba blocks of width n_embd: two per transformer layer, as the
    Mamba paper counts (each has about 6 n_embd^2 weights, attention + MLP 12 n_embd^2)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.n_dims, config.n_embd)
        self.h = nn.ModuleList(MambaBlock(config) for _ in range(2 * config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.read_out = nn.Linear(config.n_embd, 1)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.h:
            h = block(h)
        return h


class MambaFormer(RecurrentModel):
    """Park et al. 2024's hybrid, with no positions: a Mamba block first (in place of the position
    embedding), then n_layer layers of causal softmax attention (pre-LayerNorm, residual), each
    followed by a Mamba block in place of the MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.read_in = nn.Linear(config.n_dims, config.n_embd)
        self.first = MambaBlock(config)
        self.ln = nn.ModuleList(nn.LayerNorm(config.n_embd, eps=1e-5) for _ in range(config.n_layer))
        self.attn = nn.ModuleList(CausalSelfAttention(config) for _ in range(config.n_layer))
        self.h = nn.ModuleList(MambaBlock(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.read_out = nn.Linear(config.n_embd, 1)

    def mix(self, h: torch.Tensor) -> torch.Tensor:
        h = self.first(h)
        for ln, attn, block in zip(self.ln, self.attn, self.h):
            h = block(h + attn(ln(h), None, None))
        return h


class LinearSelfAttention(nn.Module):
    """One layer of linear self-attention (von Oswald et al. 2023) over tokens e = (x, y) of width
    D + 1: no softmax, MLP or LayerNorm. A token e attends to the tokens m it may see with
    sum over heads h of V_h (mean over m of e_m (K_h e_m . Q_h e)), added to it (a residual)."""

    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Parameter(torch.randn(n_head, width, width) / width) for _ in range(3))

    def attend(self, targets: torch.Tensor, sources: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """targets (..., N, W) reading sources (..., S, W) where mask (N, S), broadcast over the
        leading dims, allows: the mean over the allowed sources (none: 0), summed over heads."""
        q = torch.einsum("...nw,hvw->...hnv", targets, self.q)  # (..., H, N, W)
        k = torch.einsum("...nw,hvw->...hnv", sources, self.k)
        v = torch.einsum("...nw,hvw->...hnv", sources, self.v)
        mask = mask.unsqueeze(-3)  # the same for every head
        scores = (q @ k.mT) * mask / mask.sum(-1, keepdim=True).clamp(min=1)  # (..., H, N, S)
        return (scores @ v).sum(-3)

    def forward(
        self, context: torch.Tensor, queries: torch.Tensor, sees: torch.Tensor, reads: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (..., N, W) read the context where `sees` (N, N) allows, query tokens
        (..., M, W) where `reads` (M, N) allows."""
        return context + self.attend(context, context, sees), queries + self.attend(queries, context, reads)


class LSA(PromptModel):
    """L layers of linear self-attention over the paired tokens (x_i, y_i) and a query token (x, 0)
    per position (arch='lsa'): the prediction is minus the query token's y slot after the last layer
    (von Oswald et al.'s read-out). Query i reads the pairs before i. With mask='causal' context
    token j sees the pairs 0..j, and every prefix is predicted in one pass; with mask='prefix' it sees
    the whole prefix (the paper's model), and every prefix gets its own copy of the context, still in
    one pass. Width D + 1 and n_head heads; n_embd and the positions are not used."""

    positions = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(
            LinearSelfAttention(config.n_dims + 1, config.n_head) for _ in range(config.n_layer)
        )

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        return -self.hidden_states(xs, ys, queries)[-1][..., -1]

    def hidden_states(
        self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The query tokens (B, N, D + 1) before the first layer and after each."""
        queries = check_prompt(xs, ys, queries, self.config)
        N = xs.shape[1]
        context = torch.cat((xs, ys.unsqueeze(-1).to(xs.dtype)), dim=-1)
        h = torch.cat((queries, torch.zeros_like(queries[..., :1])), dim=-1)
        if self.config.mask == "causal":
            seen = torch.ones(N, N, dtype=torch.bool, device=xs.device).tril()  # j sees 0..j
            return self.through_layers(context, h, seen, seen.tril(-1))  # query i reads the pairs before i
        # prefix p (B, P, ...): its context tokens and its query read the pairs before p
        before = torch.arange(N, device=xs.device) < torch.arange(N, device=xs.device)[:, None, None]  # (P, 1, N)
        states = self.through_layers(context.unsqueeze(1).expand(-1, N, -1, -1), h.unsqueeze(2), before, before)
        return [state.squeeze(2) for state in states]

    def through_layers(
        self, context: torch.Tensor, h: torch.Tensor, sees: torch.Tensor, reads: torch.Tensor
    ) -> list[torch.Tensor]:
        states = [h]
        for layer in self.layers:
            context, h = layer(context, h, sees, reads)
            states.append(h)
        return states

    def after_prompt(self, xs: torch.Tensor, ys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(B, M) predictions for queries (B, M, D), each from all N pairs, in one pass."""
        check_prompt(xs, ys, None, self.config)
        N, M = xs.shape[1], queries.shape[1]
        context = torch.cat((xs, ys.unsqueeze(-1).to(xs.dtype)), dim=-1)
        h = torch.cat((queries, torch.zeros_like(queries[..., :1])), dim=-1)
        sees = torch.ones(N, N, dtype=torch.bool, device=xs.device)
        sees = sees if self.config.mask == "prefix" else sees.tril()
        return -self.through_layers(context, h, sees, torch.ones(M, N, dtype=torch.bool, device=xs.device))[-1][..., -1]


MODELS = {
    "transformer": Transformer,
    "linear_attention": Transformer,
    "lstm": LSTM,
    "mamba": Mamba,
    "mambaformer": MambaFormer,
    "lsa": LSA,
}


def build_model(config: ModelConfig) -> PromptModel:
    """The model of `config.arch`, freshly initialised from torch's global RNG."""
    return MODELS[config.arch](config)
