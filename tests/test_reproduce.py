import json

import pytest

from minicl.reproduce import CLAIMS, claim_baselines, claim_config, evaluated, format_verdicts, reproduce, verdict
from minicl.train import train
from tests.helpers import SHORT, assert_final_eval_is_the_models

D, N = 4, 17


def made_up(errors: dict[str, float], trivial: float = 1.0) -> dict:
    """Metrics as evaluate writes them, each model at one error for every k."""
    models = {
        m: {"mean": [e] * N, "std": [0.0] * N, "lo": [e * 0.9] * N, "hi": [e * 1.1] * N} for m, e in errors.items()
    }
    return {"n_dims": D, "n_points": N, "settings": {"standard": {"trivial": [trivial] * N, "models": models}}}


LASSOS = {"lasso_1": 0.9, "lasso_1e-1": 0.2, "lasso_1e-2": 0.3}
CASES = {  # claim: (errors where it holds, errors where it does not)
    "linear": ({"transformer": 0.03, "least_squares": 0.0}, {"transformer": 0.3, "least_squares": 0.0}),
    "sparse_linear": (
        {"transformer": 0.25, "least_squares": 0.6, **LASSOS},
        {"transformer": 0.35, "least_squares": 0.6, **LASSOS},
    ),
    "relu_2nn": (
        {"transformer": 0.2, "gd_2nn": 0.15, "least_squares": 0.5},
        {"transformer": 0.3, "gd_2nn": 0.15, "least_squares": 0.5},
    ),
    "decision_tree": (
        {"transformer": 0.3, "xgboost": 0.5, "decision_tree_4": 0.6, "decision_tree": 0.7},
        {"transformer": 0.55, "xgboost": 0.5, "decision_tree_4": 0.6, "decision_tree": 0.7},
    ),
}


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_each_verdict_holds_and_fails_where_it_should(claim):
    good, bad = CASES[claim]
    held, failed = verdict(claim, made_up(good)), verdict(claim, made_up(bad))
    assert held["holds"] and all(c["holds"] for c in held["conditions"])
    assert not failed["holds"] and any(not c["holds"] for c in failed["conditions"])
    assert held["errors"]["transformer"][str(held["ks"][0])] == pytest.approx(
        [good["transformer"], 0.9 * good["transformer"], 1.1 * good["transformer"]]
    )


def test_trees_do_not_hold_when_the_comparators_are_worse_than_predicting_0():
    result = verdict(
        "decision_tree", made_up({"transformer": 0.9, "xgboost": 1.4, "decision_tree_4": 1.3, "decision_tree": 1.5})
    )
    assert not result["holds"]
    assert [c["holds"] for c in result["conditions"]] == [False, True, True, True]
    assert "better than predicting 0" in result["conditions"][0]["condition"] and result["conditions"][0]["k"] == N - 1


def test_the_criteria_read_the_named_k():
    lin = made_up({"transformer": 0.0, "least_squares": 0.0})
    lin["settings"]["standard"]["models"]["transformer"]["mean"][2 * D] = 0.2  # worse only at k = 2d
    result = verdict("linear", lin)
    assert result["ks"] == [D // 2, 2 * D] and [c["holds"] for c in result["conditions"]] == [True, False]


def test_unknown_claims_and_scales_are_refused():
    with pytest.raises(ValueError, match="unknown claim 'cubic'"):
        claim_config("cubic", "cpu", [])
    with pytest.raises(ValueError, match="scale must be one of"):
        claim_config("linear", "laptop", [])


FEW = [*SHORT, "trainer.steps=2"]


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_every_claim_config_composes_and_trains(claim, tmp_path):
    cfg = claim_config(claim, "cpu", FEW)
    assert cfg.trainer.amp is False  # fp32, as the paper
    train(cfg, tmp_path)
    assert_final_eval_is_the_models(tmp_path)
    assert sorted(claim_baselines(claim, tmp_path)) == sorted(CLAIMS[claim].shown)  # each in its task's baseline set


def test_reproduce_trains_each_seed_side_by_side_judges_and_reuses_finished_runs(tmp_path, capsys):
    results = reproduce(
        ["linear", "relu_2nn"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=FEW, seeds=[0, 3], jobs=2
    )
    out = tmp_path / "cpu"
    assert [(c["claim"], c["seeds"], [r["seed"] for r in c["runs"]]) for c in results] == [
        ("linear", [0, 3], [0, 3]),
        ("relu_2nn", [0, 3], [0, 3]),
    ]
    for c in results:  # each seed's verdict is its claim's conditions on that run's own evaluation
        for r in c["runs"]:
            run = out / c["claim"] / f"seed{r['seed']}"
            metrics = json.loads((run / "metrics.json").read_text())
            assert {k: v for k, v in r.items() if k in verdict(c["claim"], metrics)} == verdict(c["claim"], metrics)
            assert r["holds"] is False and r["run"] == str(run)  # two steps of training learn nothing
            assert (
                metrics["seed"] == r["seed"] and (run / "console.log").exists()
            )  # trained on its seed, beside the other
        assert c["holds_on"] == 0 and c["holds"] is False
        first, other = (c["runs"][i]["errors"]["transformer"] for i in (0, 1))
        assert first != other  # two seeds, two models (and two prompt sets)
    assert "ratio" in results[1]["runs"][0] and results[1]["runs"][0]["ratio"]["to"] == "gd_2nn"
    written = json.loads((out / "claims.json").read_text())
    assert written["claims"] == json.loads(json.dumps(results))
    assert {"command", "commit", "machine"} <= set(written)  # with where it came from (commit: None outside git)
    assert all((out / f"{name}.png").exists() for name in ("claims", "claim_linear", "claim_relu_2nn", "training"))
    printed = capsys.readouterr().out
    assert "holds on 0 of 2 seeds" in printed and " seed 3: DOES NOT HOLD" in printed
    assert format_verdicts(written["claims"]) == format_verdicts(results)
    stamp = (out / "linear" / "seed3" / "state.pt").stat().st_mtime
    reproduce(["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=FEW, seeds=[3])
    assert (out / "linear" / "seed3" / "state.pt").stat().st_mtime == stamp  # finished: reused, not retrained
    metrics_path = out / "linear" / "seed3" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["settings"]["standard"]["models"]["knn_3"]  # as written before knn_3 joined the task's baselines
    metrics_path.write_text(json.dumps(metrics))
    assert (
        "knn_3" in evaluated(out / "linear" / "seed3", 16, "cpu")["settings"]["standard"]["models"]
    )  # evaluated again
    for changed in ("trainer.lr=0.5", "trainer.steps=1"):  # a finished run of another config is not reused
        with pytest.raises(ValueError, match="finished run of another config.*trainer"):
            reproduce(["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=[*FEW, changed])


def test_seeds_are_checked_before_any_work(tmp_path):
    for bad in (0, [1, 1], [-1]):
        with pytest.raises(ValueError, match="seeds must be a count N >= 1 or a list of distinct seeds"):
            reproduce(["linear"], "cpu", tmp_path, seeds=bad)
    with pytest.raises(ValueError, match="as seeds=.*not as the override trainer.seed"):
        reproduce(["linear"], "cpu", tmp_path, overrides=["trainer.seed=4"])
    assert not any(tmp_path.iterdir())


def test_paper_scale_composes_trains_checkpoints_and_evaluates(tmp_path):
    cfg = claim_config("sparse_linear", "paper", [])
    assert (cfg.task.n_dims, cfg.model.n_layer, cfg.trainer.steps, cfg.trainer.schedule) == (
        20,
        12,
        500_000,
        "constant",
    )
    [result] = reproduce(["sparse_linear"], "paper", tmp_path, n_prompts=8, device="cpu", overrides=FEW)
    assert result["n_dims"] == 20 and (tmp_path / "paper" / "sparse_linear" / "seed0" / "state.pt").exists()


def test_the_training_curve_reads_every_snapshot_and_ends_at_the_final_evaluation(tmp_path):
    [c] = reproduce(
        ["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=[*FEW, "trainer.snapshot_every=1"]
    )
    [r] = c["runs"]
    assert r["curve"]["steps"] == [1, 2] and list(r["curve"]["errors"]) == [str(k) for k in r["ks"]]
    for k, errs in r["curve"]["errors"].items():
        assert errs[-1] == pytest.approx(r["errors"]["transformer"][k][0], rel=1e-5)  # step 2 is the final model
        assert errs[0] != errs[-1]
    assert (tmp_path / "cpu" / "training.png").exists() and "during training: 1 " in format_verdicts([c])
