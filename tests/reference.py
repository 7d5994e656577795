"""The original code's model and training step, for side-by-side speed and parity checks.

TransformerModel of Garg et al.: read_in Linear(d, n_embd), a HuggingFace GPT2Model backbone fed
`inputs_embeds` (2 * n_positions positions, no dropout), read_out Linear(n_embd, 1) read at the
x tokens. Its loop samples prompts on the CPU, copies them to the device and calls .item() on
the loss every step.
"""

import torch
import torch.nn as nn


class OriginalModel(nn.Module):
    def __init__(self, n_dims: int, n_positions: int, n_embd: int, n_layer: int, n_head: int):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            n_positions=2 * n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        config._attn_implementation = "eager"  # as the original ran it
        self._read_in = nn.Linear(n_dims, n_embd)
        self._backbone = GPT2Model(config)
        self._read_out = nn.Linear(n_embd, 1)

    @staticmethod
    def combine(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Interleave x and (y, 0, ..., 0) tokens: (B, 2N, D)."""
        B, N, D = xs.shape
        ys_wide = torch.cat((ys.view(B, N, 1), torch.zeros(B, N, D - 1, device=ys.device)), dim=2)
        return torch.stack((xs, ys_wide), dim=2).view(B, 2 * N, D)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        embeds = self._read_in(self.combine(xs, ys))
        hidden = self._backbone(inputs_embeds=embeds).last_hidden_state
        return self._read_out(hidden)[:, ::2, 0]


def original_step(
    model: nn.Module, opt: torch.optim.Optimizer, batch: int, n_points: int, n_dims: int, device
) -> float:
    """One step as the original ran it: sample on the CPU, copy, fp32, sync on the loss."""
    xs = torch.randn(batch, n_points, n_dims)
    ys = (xs @ torch.randn(batch, n_dims, 1)).squeeze(-1)
    xs, ys = xs.to(device), ys.to(device)
    loss = ((model(xs, ys) - ys) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def module_2nn(weights: dict[str, torch.Tensor], m: int) -> nn.Module:
    """Net m of minicl's batched 2-layer ReLU nets (minicl.baselines.init_2nn) as an nn.Module."""
    w1 = weights["w1"][m]
    net = nn.Sequential(nn.Linear(*w1.shape), nn.ReLU(), nn.Linear(w1.shape[1], 1)).to(w1.dtype)
    with torch.no_grad():
        net[0].weight.copy_(w1.T), net[0].bias.copy_(weights["b1"][m])
        net[2].weight.copy_(weights["w2"][m][None]), net[2].bias.copy_(weights["b2"][m][None])
    return net


def fit_2nn(net: nn.Module, X: torch.Tensor, y: torch.Tensor, steps: int = 100, lr: float = 5e-3) -> nn.Module:
    """The original's per-prompt GD baseline: full-batch Adam on the mean squared error."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((net(X).squeeze(-1) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def bayes_sparse_slow(xs, ys, queries, sparsity: int, w_scale: float, noise_std: float) -> torch.Tensor:
    """The sparse prior's posterior mean by enumeration, one prompt, prefix and support at a time,
    in the points' space: p(y | S) = N(y; 0, K) with K = w_scale^2 X_S X_S^T + noise_std^2 I, and
    E[w_S | y, S] = w_scale^2 X_S^T K^-1 y. Uniform over the supports of the prompt's nonzero dims."""
    import itertools

    out = torch.zeros(ys.shape, dtype=torch.float64)
    for b in range(xs.shape[0]):
        x, y, q = xs[b].double(), ys[b].double(), queries[b].double()
        dims = [d for d in range(x.shape[1]) if x[:, d].abs().sum() > 0]
        for i in range(1, x.shape[0]):
            logp, preds = [], []
            for S in itertools.combinations(dims, sparsity):
                xS = x[:i, list(S)]
                K = w_scale**2 * xS @ xS.T + noise_std**2 * torch.eye(i, dtype=torch.float64)
                dist = torch.distributions.MultivariateNormal(torch.zeros(i, dtype=torch.float64), K)
                logp.append(dist.log_prob(y[:i]))
                preds.append(q[i, list(S)] @ (w_scale**2 * xS.T @ torch.linalg.solve(K, y[:i])))
            out[b, i] = (torch.softmax(torch.stack(logp), 0) * torch.stack(preds)).sum()
    return out
