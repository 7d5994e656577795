"""Algorithm selection measured as Bai et al. 2023 ("Transformers as statisticians") frame it: on
each component of a mixture of linear tasks with different label noise, the ridge lam whose
predictions a predictor's are closest to (its effective lam), with a bootstrap band. A model that
reads the noise level off the prompt has a different effective lam per component, as the Bayes
model average does (about sigma^2 of each); one that does not has nearly the same lam on both.

`minicl.evaluate` adds `effective_lam` to each component of such a mixture and a `selection`
verdict to metrics.json; docs/render.py only shows them.
"""

import torch

from minicl.baselines import NOISELESS_STD, prefix_cross, prefix_gram
from minicl.common import bootstrap_counts
from minicl.tasks import Linear, Mixture, NoisyLinear, Task

EFFECTIVE_LAMS = torch.logspace(-3, 2, 101, dtype=torch.float64)  # 1e-3 .. 100, twenty a decade
BOOTSTRAP = 1000
RATIO = 10  # the effective-lam ratio between the noisiest and the cleanest component the verdict asks


def noise_levels(task: Task) -> list[float] | None:
    """A mixture whose every component is linear with w ~ N(0, I) and one noise level: each
    component's label noise std (NOISELESS_STD for none), in component order; any other task: None."""
    if not isinstance(task, Mixture):
        return None
    linear = [type(part) in (Linear, NoisyLinear) and getattr(part, "w_scale", 0) == 1 for part in task.parts]
    if not all(linear) or any(getattr(part, "noise_max", 0) > 0 for part in task.parts):  # a range: no one level
        return None
    return [getattr(part, "noise_std", NOISELESS_STD) for part in task.parts]


def ridge_path(xs: torch.Tensor, ys: torch.Tensor, k: int, lams: torch.Tensor = EFFECTIVE_LAMS) -> torch.Tensor:
    """(L, B) float64: ridge at each lam, fitted on the first k pairs of each prompt, predicting y_k
    (one eigendecomposition per prompt)."""
    xs, ys = xs[:, : k + 1].double(), ys[:, : k + 1].double()
    s, vecs = torch.linalg.eigh(prefix_gram(xs)[:, k])  # (B, D), (B, D, D): X^T X of the k pairs
    along = (vecs.mT @ prefix_cross(xs, ys)[:, k].unsqueeze(-1)).squeeze(-1)  # V^T X^T y
    query = (xs[:, k].unsqueeze(-2) @ vecs).squeeze(-2)
    return (query * along / (s + lams[:, None, None])).sum(-1)


def effective_lam(preds: torch.Tensor, path: torch.Tensor, counts: torch.Tensor) -> dict:
    """The lam of EFFECTIVE_LAMS whose ridge predictions (path, (L, B)) are closest in mean squared
    distance to `preds` (B,), the 5-95% range of that argmin over the bootstrap resamples `counts`
    and the resamples' lams themselves (for ratios between components)."""
    per_prompt = (path - preds.double().cpu()) ** 2  # (L, B)
    resampled = counts @ per_prompt.T / per_prompt.shape[1]  # (R, L)
    picks = EFFECTIVE_LAMS[resampled.argmin(1)]
    lam = EFFECTIVE_LAMS[per_prompt.mean(1).argmin()].item()
    low, high = torch.quantile(picks, torch.tensor([0.05, 0.95], dtype=torch.float64)).tolist()
    edge = lam in (EFFECTIVE_LAMS[0].item(), EFFECTIVE_LAMS[-1].item())
    return {"lam": lam, "band": [low, high], "at_edge": edge, "resamples": picks}


def effective_lams(xs: torch.Tensor, ys: torch.Tensor, k: int, preds: dict[str, torch.Tensor], seed: int) -> dict:
    """{label: effective_lam} at k for each predictor's predictions (B, N) on the prompts xs, ys,
    all on the same bootstrap resamples of the prompts."""
    path, counts = ridge_path(xs, ys, k), bootstrap_counts(xs.shape[0], seed, BOOTSTRAP)
    return {label: effective_lam(p[:, k], path, counts) for label, p in preds.items()}


def ratio(low: dict, high: dict) -> dict:
    """The effective lam of `high` over that of `low` with the 5-95% range of the resamples' ratios
    (independent prompts: resample r of one against resample r of the other), and whether their
    bands are apart."""
    ratios = high["resamples"] / low["resamples"]
    band = torch.quantile(ratios, torch.tensor([0.05, 0.95], dtype=torch.float64)).tolist()
    return {"ratio": high["lam"] / low["lam"], "band": band, "apart": low["band"][1] < high["band"][0]}


def selection_verdict(errors: dict[str, list[float]], lams: dict[str, list[dict]], model: str) -> dict:
    """A noise mixture's verdict, from each predictor's error on each component (cleanest first) and
    the effective lams of the model and the Bayes average. Part 1 (the issue-38 criterion): no fixed
    ridge of the grid at least as good as the model on every component, the model within 0.03 of the
    Bayes average on the cleanest and within 10% on the noisiest. Part 2: the model's effective lam
    on the noisiest at least RATIO times that on the cleanest, with the bands apart."""
    mine, bayes = errors[model], errors["bayes_noise_mixture"]
    fixed = [r for r in errors if r.startswith("ridge_") and not r.startswith("ridge_c")]
    as_good = [r for r in fixed if all(a <= b for a, b in zip(errors[r], mine))]
    closest = min(fixed, key=lambda r: max(a / b for a, b in zip(errors[r], mine)))
    near = abs(mine[0] - bayes[0]) <= 0.03 and abs(mine[-1] - bayes[-1]) <= 0.1 * bayes[-1]
    model_ratio = ratio(lams[model][0], lams[model][-1])
    selects = model_ratio["ratio"] >= RATIO and model_ratio["apart"]
    bayes_ratio = ratio(lams["bayes_noise_mixture"][0], lams["bayes_noise_mixture"][-1])
    return {
        "fixed_as_good": as_good,
        "closest_fixed": closest,
        "near_bayes": near,
        "criterion_38": not as_good and near,
        "lam_ratio": {"model": model_ratio, "bayes_noise_mixture": bayes_ratio},
        "ratio_criterion": selects,
        "holds": not as_good and near and selects,
    }
