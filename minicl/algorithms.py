"""Hand-built models whose answer is known: von Oswald et al. 2023's construction of gradient
descent in linear self-attention.

- `gd_lsa(n_dims, lr, layers, mask)`: an lsa model with the construction in every layer. With
  mask="prefix" (every context pair sees the whole prefix, the paper's model) it predicts what
  `layers` steps of full-batch GD do (the `gd` baseline). With mask="causal" (pair j sees pairs
  0..j) it does not: as layers grow it converges to the fixed point of one pass of online GD
  (Ding et al. 2024, "CausalLM is not optimal for in-context learning"), here the one of minicl's
  mean-normalised attention, `online_gd` with lr=1 and shrink=True.
- `one_step_gd(n_dims, lr)`: gd_lsa with one layer, the same under either mask.

Imports torch and minicl.model only: the probe that reads trained models is minicl.algorithm_probe.
"""

from collections.abc import Sequence

import torch

from minicl.model import LSA, LinearSelfAttention, Mask, ModelConfig, build_model


def gd_lsa(n_dims: int, lr: float | Sequence[float], layers: int, mask: Mask = "prefix") -> LSA:
    """An lsa model of `layers` layers of one head, each one GD step of size `lr` (or lr[l] in layer
    l): with tokens e = (x, y), W_K = W_Q = [[I, 0], [0, 0]] make the attention score of pair m for
    token e the product x_m . x, and W_V = [[0, 0], [0, -lr]] moves -lr y_m into e's y slot; the mean
    over the i pairs it sees gives -(lr / i) sum_m y_m x_m . x. For the query that is minus the
    prediction x . w_1 of w_1 = lr (1/i) sum_m y_m x_m, the first step on (1/2i) sum_m (w . x_m - y_m)^2,
    and for a context pair that has seen the whole prefix, its residual y_j - x_j . w_1: the next
    layer takes the next step."""
    lrs = [float(lr)] * layers if isinstance(lr, (int, float)) else [float(r) for r in lr]
    if layers < 1 or len(lrs) != layers:
        raise ValueError(f"gd_lsa needs layers >= 1 and one lr or one per layer, got layers={layers} lr={lr!r}")
    model = build_model(ModelConfig(n_dims=n_dims, arch="lsa", n_layer=layers, n_head=1, mask=mask))
    assert isinstance(model, LSA)
    width = n_dims + 1
    reads_x = torch.zeros(width, width)
    reads_x[:n_dims, :n_dims] = torch.eye(n_dims)
    for layer, step in zip(model.layers, lrs):
        assert isinstance(layer, LinearSelfAttention)
        moves_y = torch.zeros(width, width)
        moves_y[n_dims, n_dims] = -step
        with torch.no_grad():
            layer.q.copy_(reads_x[None])
            layer.k.copy_(reads_x[None])
            layer.v.copy_(moves_y[None])
    return model.eval()


def one_step_gd(n_dims: int, lr: float) -> LSA:
    """One layer of von Oswald et al.'s construction: one GD step of size `lr` (gd_lsa with layers=1;
    with one layer the mask changes nothing the query reads)."""
    return gd_lsa(n_dims, lr, 1, mask="causal")
