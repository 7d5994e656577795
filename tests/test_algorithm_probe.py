"""The algorithm probe on inputs whose answer is known: hand-built GD models, a stand-in whose layers
are ridge and Newton, and a case two algorithms cannot tell apart. Each test fails if the probe
names the wrong algorithm or calls a tie a win."""

import numpy as np
import pytest
import torch

from minicl.algorithm_probe import EDGES, GD_STEPS, best_gd_lrs, family, probe_setting, split
from minicl.algorithms import gd_lsa
from minicl.baselines import prefix_cross
from minicl.model import LSA, ModelConfig
from minicl.settings import setting_prompts
from minicl.tasks import build_task
from tests.test_algorithms import newton_loop

TASK = build_task("linear", n_dims=5)


def line_searched_lrs(k: int, n_points: int = 11, seed: int = 0, n_prompts: int = 512) -> list[float]:
    """GD's step sizes as probe_setting finds them (on the fitting part of the setting's one draw)."""
    fit, _ = split(setting_prompts("standard", TASK, 3 * n_prompts, n_points, seed), 2 * n_prompts)
    return best_gd_lrs(fit.xs, fit.ys, k)


@pytest.mark.parametrize("t", [1, 2, 3])
def test_the_probe_finds_t_gd_steps_in_the_hand_built_prefix_model(t):
    """gd_lsa(prefix) at the line-searched step size for t steps is gd_t: the output's verdict is
    gd_t outright (no tie), at distance 0, and so is the readout of its last layer."""
    k, lrs = 5, line_searched_lrs(5)
    model = gd_lsa(5, lrs[GD_STEPS.index(t)], t, mask="prefix")
    report = probe_setting(model, TASK, "standard", 11, k, 512, 0, lrs=lrs)
    output, last = report["output"], report["layers"][t]
    assert output["verdict"] == f"gd_{t}" and output["distance"][f"gd_{t}"] < 1e-10
    assert output["error_cosine"][f"gd_{t}"] > 1 - 1e-9 and output["cosine"][f"gd_{t}"] > 1 - 1e-9
    assert last["verdict"] == f"gd_{t}"
    assert report["layers"][0]["error"][k] > 0.9  # the embedding (x, 0) alone says nothing of y


def numpy_ridge(x: np.ndarray, y: np.ndarray, query: np.ndarray, lam: float) -> float:
    return float(query @ np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)) if len(x) else 0.0


def numpy_newton(x: np.ndarray, y: np.ndarray, query: np.ndarray, steps: int) -> float:
    return float(query @ newton_loop(x, y, steps)) if len(x) else 0.0


def reference(solver, **params):
    """A predictor with the call shape, from a numpy solver run prompt by prompt and prefix by prefix."""

    def predict(xs, ys):
        x, y = xs.double().numpy(), ys.double().numpy()
        return torch.tensor(
            [[solver(x[b, :i], y[b, :i], x[b, i], **params) for i in range(x.shape[1])] for b in range(len(x))]
        )

    return predict


class StandIn(LSA):
    """A model whose layer l holds algorithm l's prediction plus small noise (a state of width 1),
    and whose output is the last one's: what the probe should find is known."""

    def __init__(self, algorithms: list, noise: float):
        super().__init__(ModelConfig(n_dims=TASK.n_dims, arch="lsa", n_layer=1, n_head=1))
        self.algorithms, self.noise = algorithms, noise

    def hidden_states(self, xs, ys, queries=None):
        gen = torch.Generator().manual_seed(xs.shape[0])
        return [(a(xs, ys) + self.noise * torch.randn(ys.shape, generator=gen)).unsqueeze(-1) for a in self.algorithms]

    def forward(self, xs, ys, queries=None):
        return self.hidden_states(xs, ys)[-1].squeeze(-1)


def test_the_probe_finds_ridge_and_newton_in_a_stand_in_model():
    """Layers that are ridge at lam = 0.1 and Newton after 5 iterations (numpy references), each with
    noise of 1% of the signal's scale: each is found as itself, outright, with its band on itself."""
    ridge, newton = reference(numpy_ridge, lam=0.1), reference(numpy_newton, steps=5)
    model = StandIn([ridge, newton], noise=0.01 * TASK.n_dims**0.5)
    report = probe_setting(model, TASK, "standard", 11, 5, 1024, 0)
    ridge_layer, newton_layer = report["layers"]
    assert ridge_layer["verdict"] == "ridge_0.1" and not ridge_layer["tie"]
    assert newton_layer["verdict"] == "newton_5" and not newton_layer["tie"]
    assert report["output"]["verdict"] == "newton_5"
    assert newton_layer["families"]["newton"]["band"] == ["newton_5", "newton_5"]


def test_algorithms_that_cannot_be_told_apart_come_out_as_a_tie():
    """At k = 2d noise-free prompts are solved exactly: least squares, ridge at small lam and
    Newton or GD run to convergence predict alike, so a model that is least squares plus noise
    matches several families within the bootstrap band: a tie naming two of them."""
    model = StandIn([reference(lambda x, y, q: float(q @ np.linalg.pinv(x) @ y) if len(x) else 0.0)], 0.01 * 5**0.5)
    report = probe_setting(model, TASK, "standard", 11, 10, 512, 0)
    output = report["output"]
    assert output["tie"] and output["difference_band"][1] >= 0
    assert family(output["closest"]) != family(output["runner_up"])
    assert output["verdict"] == f"tie: {output['closest']} / {output['runner_up']}"
    assert output["at_edge"] == (output["closest"] in EDGES or output["runner_up"] in EDGES)


def test_the_probe_fits_and_scores_on_one_distribution():
    """On skewed inputs the fitting and test prompts share the setting's rotation (the top
    eigenvectors of their input covariances agree), and the probe's GD step sizes are those
    line-searched on the fitting part of that one draw."""
    fit, test = split(setting_prompts("skewed", TASK, 3 * 256, 11, 0), 512)

    def top(xs):
        return torch.linalg.eigh(xs.reshape(-1, xs.shape[-1]).T.cov())[1][:, -1]

    assert abs(top(fit.xs) @ top(test.xs)) > 0.99
    report = probe_setting(gd_lsa(5, 0.1, 1, mask="prefix"), TASK, "skewed", 11, 5, 256, 0)
    assert list(report["gd_lrs"].values()) == best_gd_lrs(fit.xs, fit.ys, 5)


def test_the_grids_run_to_convergence():
    """The last GD and Newton members are least squares on standard prompts at k = d (up to the
    prompts where float64 cannot resolve the problem)."""
    report = probe_setting(gd_lsa(5, 0.1, 1, mask="prefix"), TASK, "standard", 11, 5, 512, 0)
    assert report["convergence"]["newton_64"] < 1e-8
    assert report["convergence"][f"gd_{GD_STEPS[-1]}"] < 1e-3


class HoldsXty(StandIn):
    """A layer whose state is X^T y / i of the pairs before each position (and the query x): it holds
    that intermediate linearly, and least squares' weights only through a non-linear map."""

    def hidden_states(self, xs, ys, queries=None):
        count = torch.arange(xs.shape[1]).clamp(min=1)[None, :, None]
        return [torch.cat((prefix_cross(xs, ys).float() / count, xs), -1)]

    def forward(self, xs, ys, queries=None):
        return torch.zeros_like(ys)


def test_the_probe_reads_an_intermediate_where_a_layer_holds_it():
    """Akyurek et al.'s intermediates: X^T y / k read back exactly from a layer that holds it, least
    squares' weights not (they need the inverse of X^T X)."""
    report = probe_setting(HoldsXty([], 0.0), TASK, "standard", 11, 5, 512, 0)
    held = report["layers"][0]["intermediates"]
    assert held["xty"] < 1e-6 and held["w_least_squares"] > 0.05
