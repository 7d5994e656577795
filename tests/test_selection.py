"""The effective lam (minicl.selection) on predictors whose answer is known: ridge at a lam of the
grid reads as that lam, the Bayes model average selects and a fixed ridge does not; the ridge path
against sklearn."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge as SkRidge

from minicl.baselines import Ridge, build_baseline
from minicl.evaluate import evaluate
from minicl.selection import EFFECTIVE_LAMS, effective_lams, ridge_path, selection_verdict
from minicl.settings import setting_prompts
from minicl.tasks import build_task

MIXTURE = {
    "name": "mixture",
    "n_dims": 5,
    "components": [{"name": "noisy_linear", "noise_std": 0.1}, {"name": "noisy_linear", "noise_std": 2.0}],
    "curriculum": {"points": {"end": 11}},
}


def component(i: int, n: int = 600):
    task = build_task("mixture", n_dims=5, components=MIXTURE["components"])
    return setting_prompts(f"component_{i}", task, n, 11, seed=3, device="cpu")


def test_ridge_path_is_sklearn_ridge_at_each_lam():
    p = component(1, n=4)
    k = 7
    path = ridge_path(p.xs, p.ys, k, torch.tensor([0.01, 1.0, 30.0], dtype=torch.float64))
    for row, lam in zip(path, (0.01, 1.0, 30.0)):
        for b in range(4):
            sk = SkRidge(alpha=lam, fit_intercept=False).fit(p.xs[b, :k].double().numpy(), p.ys[b, :k].double().numpy())
            assert row[b].item() == pytest.approx(
                sk.predict(p.xs[b, k : k + 1].double().numpy())[0], rel=1e-8, abs=1e-10
            )


@pytest.mark.parametrize("index", [10, 45, 80])
def test_ridge_at_a_grid_lam_reads_as_that_lam(index):
    lam = EFFECTIVE_LAMS[index].item()
    p = component(1)
    found = effective_lams(p.xs, p.ys, 10, {"ridge": Ridge(lam=lam)(p.xs, p.ys)}, seed=0)["ridge"]
    assert found["lam"] == pytest.approx(lam)
    assert found["band"][0] <= lam <= found["band"][1]
    assert not found["at_edge"]


def test_a_noisy_ridge_still_reads_near_its_lam_and_a_shifted_one_does_not():
    p, lam = component(1), EFFECTIVE_LAMS[66].item()  # about 2
    preds = Ridge(lam=lam)(p.xs, p.ys)
    noisy = preds + 0.05 * torch.randn(preds.shape, generator=torch.Generator().manual_seed(1))
    found = effective_lams(p.xs, p.ys, 10, {"noisy": noisy, "other": Ridge(lam=20.0)(p.xs, p.ys)}, seed=0)
    assert found["noisy"]["band"][0] <= lam <= found["noisy"]["band"][1]
    assert found["other"]["band"][0] > lam * 1.5


def lams_of(preds_by_component: dict[str, list[torch.Tensor]], prompts) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for label, per_component in preds_by_component.items():
        for p, preds in zip(prompts, per_component):
            out.setdefault(label, []).append(effective_lams(p.xs, p.ys, 10, {label: preds}, seed=0)[label])
    return out


def test_the_bayes_average_selects_and_a_fixed_ridge_does_not():
    prompts = [component(0), component(1)]
    bayes = build_baseline("bayes_noise_mixture", noise_stds=[0.1, 2.0])
    fixed = Ridge(lam=2.0)
    lams = lams_of(
        {"bayes_noise_mixture": [bayes(p.xs, p.ys) for p in prompts], "fixed": [fixed(p.xs, p.ys) for p in prompts]},
        prompts,
    )
    assert lams["bayes_noise_mixture"][0]["lam"] < 0.1 and 1.5 < lams["bayes_noise_mixture"][1]["lam"] < 8
    errors = {
        "bayes_noise_mixture": [0.003, 0.44],
        "fixed": [0.1, 0.48],
        "ridge_2": [0.1, 0.48],
        "ridge_0.01": [0.003, 1.0],
    }
    as_model = selection_verdict(errors, {"bayes_noise_mixture": lams["bayes_noise_mixture"]}, "bayes_noise_mixture")
    bayes_ratio = as_model["lam_ratio"]["model"]
    assert bayes_ratio["ratio"] >= 10 and bayes_ratio["apart"]
    assert 10 <= bayes_ratio["band"][0] <= bayes_ratio["ratio"] <= bayes_ratio["band"][1]
    assert as_model["holds"] and as_model["criterion_38"]
    verdict = selection_verdict(
        errors, {"fixed": lams["fixed"]} | {"bayes_noise_mixture": lams["bayes_noise_mixture"]}, "fixed"
    )
    assert verdict["lam_ratio"]["model"]["ratio"] == pytest.approx(1.0, rel=0.2)
    assert not verdict["ratio_criterion"] and not verdict["holds"]
    assert verdict["fixed_as_good"] == ["ridge_2"] and not verdict["criterion_38"]


def test_evaluate_gives_each_component_effective_lams_and_the_models_verdict(tmp_path):
    predictors = {
        "model": build_baseline("ridge", lam=1.0),
        "bayes_noise_mixture": build_baseline("bayes_noise_mixture", noise_stds=[0.1, 2.0]),
        "ridge_0.01": build_baseline("ridge", lam=0.01),
    }
    metrics = evaluate(MIXTURE, predictors, tmp_path, n_prompts=256, progress=False, model="model", bootstrap=50)
    lam = metrics["settings"]["component_1"]["effective_lam"]
    assert lam["k"] == 10 and lam["model"]["lam"] == pytest.approx(1.0, rel=0.13)
    assert "resamples" not in lam["model"]
    assert metrics["selection"]["components"] == ["component_0", "component_1"]
    assert not metrics["selection"]["holds"]
    assert np.isfinite(metrics["selection"]["lam_ratio"]["bayes_noise_mixture"]["ratio"])
    assert "selection" not in evaluate(MIXTURE, predictors, tmp_path, n_prompts=64, progress=False, bootstrap=10)


@pytest.mark.parametrize("small_noise, near", [(0.02, True), (0.05, False)])
def test_the_error_part_asks_the_model_near_the_bayes_average(small_noise, near):
    errors = {
        "m": [small_noise, 0.45],
        "bayes_noise_mixture": [0.003, 0.44],
        "ridge_0.1": [0.004, 0.9],
        "ridge_2": [0.1, 0.46],
    }
    lam = {"lam": 1.0, "band": [0.9, 1.1], "at_edge": False, "resamples": torch.ones(5, dtype=torch.float64)}
    verdict = selection_verdict(errors, {"m": [lam, lam], "bayes_noise_mixture": [lam, lam]}, "m")
    assert verdict["fixed_as_good"] == [] and verdict["closest_fixed"] == "ridge_0.1"  # its worse ratio is 2
    assert verdict["near_bayes"] is near and verdict["criterion_38"] is near and not verdict["holds"]


def test_without_the_bayes_average_there_is_no_verdict_and_no_error(tmp_path):
    predictors = {"model": build_baseline("ridge", lam=1.0)}
    metrics = evaluate(MIXTURE, predictors, tmp_path, n_prompts=64, progress=False, model="model", bootstrap=10)
    assert "selection" not in metrics and "effective_lam" in metrics["settings"]["component_0"]


def test_a_component_with_a_range_of_noise_levels_has_no_single_level():
    from minicl.selection import noise_levels

    parts = [{"name": "noisy_linear", "noise_std": 0.1}, {"name": "noisy_linear", "noise_max": 2.0}]
    assert noise_levels(build_task("mixture", n_dims=5, components=parts)) is None
    assert noise_levels(build_task("mixture", n_dims=5, components=MIXTURE["components"])) == [0.1, 2.0]
