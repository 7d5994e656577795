import json

import pytest

from minicl.reproduce import CLAIMS, claim_config, format_verdicts, reproduce, verdict
from minicl.train import train
from tests.helpers import SHORT, assert_final_eval_is_the_models

D, N = 4, 17


def made_up(errors: dict[str, float], trivial: float = 1.0) -> dict:
    """Metrics as evaluate writes them, each model at one error for every k."""
    models = {m: {"mean": [e] * N, "lo": [e * 0.9] * N, "hi": [e * 1.1] * N} for m, e in errors.items()}
    return {"n_dims": D, "n_points": N, "settings": {"standard": {"trivial": [trivial] * N, "models": models}}}


LASSOS = {"lasso_1": 0.9, "lasso_1e-1": 0.2, "lasso_1e-2": 0.3}
CASES = {  # claim: (errors where it holds, errors where it does not)
    "linear": ({"transformer": 0.03, "least_squares": 0.0}, {"transformer": 0.3, "least_squares": 0.0}),
    "sparse_linear": ({"transformer": 0.25, "least_squares": 0.6, **LASSOS}, {"transformer": 0.35, "least_squares": 0.6, **LASSOS}),
    "relu_2nn": ({"transformer": 0.2, "gd_2nn": 0.15, "least_squares": 0.5}, {"transformer": 0.3, "gd_2nn": 0.15, "least_squares": 0.5}),
    "decision_tree": ({"transformer": 0.3, "xgboost": 0.5, "decision_tree_4": 0.6, "decision_tree": 0.7},
                      {"transformer": 0.55, "xgboost": 0.5, "decision_tree_4": 0.6, "decision_tree": 0.7}),
}


@pytest.mark.parametrize("claim", sorted(CLAIMS))
def test_each_verdict_holds_and_fails_where_it_should(claim):
    good, bad = CASES[claim]
    held, failed = verdict(claim, made_up(good)), verdict(claim, made_up(bad))
    assert held["holds"] and all(c["holds"] for c in held["conditions"])
    assert not failed["holds"] and any(not c["holds"] for c in failed["conditions"])
    assert held["errors"]["transformer"][str(held["ks"][0])] == pytest.approx([good["transformer"], 0.9 * good["transformer"], 1.1 * good["transformer"]])


def test_trees_do_not_hold_when_the_comparators_are_worse_than_predicting_0():
    result = verdict("decision_tree", made_up({"transformer": 0.9, "xgboost": 1.4, "decision_tree_4": 1.3, "decision_tree": 1.5}))
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


def test_reproduce_trains_evaluates_judges_and_reuses_finished_runs(tmp_path, capsys):
    results = reproduce(["linear", "relu_2nn"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=FEW)
    out = tmp_path / "cpu"
    assert [r["claim"] for r in results] == ["linear", "relu_2nn"]
    for r in results:  # each verdict is its claim's conditions on the run's own evaluation
        metrics = json.loads((out / r["claim"] / "metrics.json").read_text())
        assert {k: v for k, v in r.items() if k in verdict(r["claim"], metrics)} == verdict(r["claim"], metrics)
        assert r["holds"] is False  # two steps of training learn nothing
    assert json.loads((out / "claims.json").read_text()) == json.loads(json.dumps(results))
    assert all((out / f"{name}.png").exists() for name in ("claims", "claim_linear", "claim_relu_2nn"))
    assert "DOES NOT HOLD" in capsys.readouterr().out  # two steps of training learn nothing
    assert format_verdicts(json.loads((out / "claims.json").read_text())) == format_verdicts(results)
    stamp = (out / "linear" / "state.pt").stat().st_mtime
    reproduce(["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=FEW)
    assert (out / "linear" / "state.pt").stat().st_mtime == stamp  # finished: reused, not retrained
    for changed in ("trainer.lr=0.5", "trainer.steps=1"):  # a finished run of another config is not reused
        with pytest.raises(ValueError, match="finished run of another config.*trainer"):
            reproduce(["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=[*FEW, changed])


def test_paper_scale_composes_trains_checkpoints_and_evaluates(tmp_path):
    cfg = claim_config("sparse_linear", "paper", [])
    assert (cfg.task.n_dims, cfg.model.n_layer, cfg.trainer.steps, cfg.trainer.schedule) == (20, 12, 500_000, "constant")
    [result] = reproduce(["sparse_linear"], "paper", tmp_path, n_prompts=8, device="cpu", overrides=FEW)
    assert result["n_dims"] == 20 and (tmp_path / "paper" / "sparse_linear" / "state.pt").exists()


def test_the_training_curve_reads_every_snapshot_and_ends_at_the_final_evaluation(tmp_path):
    [r] = reproduce(["linear"], "cpu", tmp_path, n_prompts=16, device="cpu", overrides=[*FEW, "trainer.snapshot_every=1"])
    assert r["curve"]["steps"] == [1, 2] and list(r["curve"]["errors"]) == [str(k) for k in r["ks"]]
    for k, errs in r["curve"]["errors"].items():
        assert errs[-1] == pytest.approx(r["errors"]["transformer"][k][0], rel=1e-5)  # step 2 is the final model
        assert errs[0] != errs[-1]
    assert (tmp_path / "cpu" / "training.png").exists() and "during training: 1 " in format_verdicts([r])
