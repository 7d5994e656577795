"""Parity with the original GPT2Model-based model, its run directories, and the sklearn estimators."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from minicl import ICLClassifier, ICLRegressor, ModelConfig, Transformer, load_model
from minicl.convert import main as convert_main
from minicl.evaluate import evaluate_run
from minicl.rundir import CheckpointError, convert_state_dict


def original(n_dims=5, n_positions=11, n_embd=32, n_layer=2, n_head=4):
    pytest.importorskip("transformers", reason="parity needs the reference extra: pip install -e .[reference]")
    from tests.reference import OriginalModel

    torch.manual_seed(0)
    model = OriginalModel(n_dims, n_positions, n_embd, n_layer, n_head).eval()
    with torch.no_grad():
        for p in model.parameters():  # move LayerNorms and biases away from their initial values
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("n_dims, n_points", [(5, 1), (5, 7), (5, 11), (3, 4)])
def test_parity_with_gpt2model(n_dims, n_points):
    ref = original(n_dims=n_dims)
    ours = Transformer(ModelConfig(n_dims=n_dims, n_positions=11, n_embd=32, n_layer=2, n_head=4))
    ours.load_state_dict(convert_state_dict(ref.state_dict()))
    xs, ys = torch.randn(6, n_points, n_dims), torch.randn(6, n_points)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(xs, ys), ref(xs, ys), rtol=1e-5, atol=1e-5)


def write_original_run(path: Path, ref, as_snapshot=False, task="linear_regression", task_kwargs=None):
    path.mkdir()
    config = {
        "model": {"family": "gpt2", "n_dims": 5, "n_positions": 11, "n_embd": 32, "n_layer": 2, "n_head": 4},
        "training": {
            "task": task,
            "task_kwargs": task_kwargs or {},
            "batch_size": 64,
            "learning_rate": 1e-4,
            "train_steps": 500,
            "curriculum": {
                "dims": {"start": 5, "end": 5, "inc": 1, "interval": 2000},
                "points": {"start": 11, "end": 11, "inc": 2, "interval": 2000},
            },
        },
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    if as_snapshot:
        torch.save(ref.state_dict(), path / "model_500.pt")
    else:
        torch.save(
            {"model_state_dict": ref.state_dict(), "optimizer_state_dict": {}, "train_step": 500}, path / "state.pt"
        )


@pytest.mark.parametrize("as_snapshot", [False, True])
def test_original_run_directory_loads_and_converts(tmp_path, as_snapshot):
    ref = original()
    write_original_run(tmp_path / "orig", ref, as_snapshot)
    xs, ys = torch.randn(4, 11, 5), torch.randn(4, 11)
    model = load_model(tmp_path / "orig")
    with torch.no_grad():
        expected = ref(xs, ys)
        torch.testing.assert_close(model(xs, ys), expected, rtol=1e-5, atol=1e-5)
        assert "wpe.weight" in model.state_dict() and not any("wte" in k for k in model.state_dict())
        convert_main([str(tmp_path / "orig"), str(tmp_path / "converted")])
        torch.testing.assert_close(load_model(tmp_path / "converted")(xs, ys), expected, rtol=1e-5, atol=1e-5)


def test_evaluate_an_original_run(tmp_path):
    write_original_run(tmp_path / "orig", original(), task="sparse_linear_regression", task_kwargs={"sparsity": 2})
    metrics = evaluate_run(
        tmp_path / "orig", n_prompts=16, settings=["standard"], progress=False, device="cpu", bootstrap=10
    )
    assert metrics["task"] == "sparse_linear" and "lasso_1e-2" in metrics["settings"]["standard"]["models"]
    assert metrics["settings"]["standard"]["normaliser"] == 2


def test_foreign_directories_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("model: {n_dims: 5}\n")
    with pytest.raises(CheckpointError, match="lacks model.n_dims/n_positions"):
        load_model(tmp_path / "a")
    write_original_run(tmp_path / "b", original())
    (tmp_path / "b" / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="neither state.pt nor model_<step>.pt"):
        load_model(tmp_path / "b")
    write_original_run(tmp_path / "c", original())
    torch.save({"model_state_dict": {"encoder.weight": torch.zeros(1)}}, tmp_path / "c" / "state.pt")
    with pytest.raises(CheckpointError, match="_read_in.weight missing"):
        load_model(tmp_path / "c")
    with pytest.raises(SystemExit, match="usage"):
        convert_main(["only-one-argument"])


# ---------------------------------------------------------------- scikit-learn estimators


def linear_model(n_dims=4, n_positions=40):
    """A Transformer whose prediction is x . w_hat with w_hat from the context: the read-out of a
    trained model is not needed to test the plumbing, so this one is random but fixed."""
    torch.manual_seed(0)
    return Transformer(ModelConfig(n_dims=n_dims, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))


def test_regressor_predicts_what_the_model_predicts_at_the_query():
    model = linear_model()
    X, y, Xq = np.random.randn(10, 3) * 5 + 2, np.random.randn(10) * 100 - 7, np.random.randn(5, 3)
    got = ICLRegressor(model, n_estimators=1).fit(X, y).predict(Xq)  # one member: the features as given
    raw = ICLRegressor(model, n_estimators=1, standardize=False).fit(X, y).predict(Xq)
    mean, std = X.mean(0), X.std(0)
    scale = y.std() / np.sqrt(3)  # y standardised, then spread as x . w over 3 features
    for j in range(5):
        for standardize, pred in ((True, got[j]), (False, raw[j])):
            xs = torch.zeros(1, 11, 4)
            context, query = ((X - mean) / std, (Xq[j] - mean) / std) if standardize else (X, Xq[j])
            xs[0, :10, :3], xs[0, 10, :3] = (
                torch.tensor(context, dtype=torch.float32),
                torch.tensor(query, dtype=torch.float32),
            )
            ys = torch.cat((torch.tensor((y - y.mean()) / scale, dtype=torch.float32), torch.zeros(1)))[None]
            assert pred == pytest.approx(model(xs, ys)[0, 10].item() * scale + y.mean(), rel=1e-4, abs=1e-4)


def test_regressor_predictions_follow_any_scale_and_offset_of_x_and_y():
    model = linear_model()
    X, y, Xq = np.random.randn(20, 3), np.random.randn(20), np.random.randn(8, 3)
    base = ICLRegressor(model).fit(X, y).predict(Xq)
    moved = ICLRegressor(model).fit(X * 30 - 4, y * 1000 + 50).predict(Xq * 30 - 4)
    np.testing.assert_allclose(moved, base * 1000 + 50, rtol=1e-5, atol=1e-3)


def test_estimator_errors():
    from sklearn.exceptions import NotFittedError

    model = linear_model(n_positions=8)
    with pytest.raises(NotFittedError):
        ICLRegressor(model).predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="5 features but the model reads at most n_dims=4"):
        ICLRegressor(model).fit(np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match="context has 9 examples but the model has room for 7"):
        ICLRegressor(model, long_context="error").fit(np.random.randn(9, 2), np.zeros(9))
    with pytest.raises(ValueError, match="n_estimators must be a positive integer, got 0"):
        ICLRegressor(model, n_estimators=0).fit(np.random.randn(5, 2), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        ICLRegressor(model).fit(np.array([[np.nan, 1.0]]), np.zeros(1))
    fitted = ICLRegressor(model, n_estimators=3).fit(np.random.randn(30, 2), np.random.randn(30))
    assert [len(rows) for rows, _ in fitted.members_] == [7, 7, 7] and fitted.n_features_in_ == 2
    assert fitted.predict(np.random.randn(4, 2)).shape == (4,)
    with pytest.raises(ValueError, match="Only binary classification"):
        ICLClassifier(model).fit(np.random.randn(6, 2), [0, 1, 2, 0, 1, 2])


def test_estimators_work_in_pipelines_and_cross_validation():
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.random.randn(30, 3)
    y = X @ np.array([1.0, -2.0, 0.5])
    scores = cross_val_score(make_pipeline(StandardScaler(), ICLRegressor(linear_model())), X, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    labels = np.where(y > 0, "pos", "neg")
    clf = make_pipeline(StandardScaler(), ICLClassifier(linear_model())).fit(X[:20], labels[:20])
    assert set(clf.predict(X[20:])) <= {"pos", "neg"} and clf.predict_proba(X[20:]).shape == (10, 2)
    assert ICLRegressor(linear_model()).set_params(long_context="subsample").get_params()["long_context"] == "subsample"


# Checks that do not apply: a random model cannot fit the checks' data; joblib.hash of a torch
# tensor differs from that of its deepcopy, so a model parameter never compares equal after clone;
# all queries go through the model in one pass, so their order moves float32 rounding (by 1 ulp, 1e-7).
FIT_QUALITY = {
    "check_regressors_train": "a random model does not fit",
    "check_classifiers_train": "a random model does not fit",
    "check_estimators_overwrite_params": "joblib.hash(tensor) != joblib.hash(deepcopy(tensor))",
    "check_methods_sample_order_invariance": "one pass over the queries: float32 rounding moves with their order",
    "check_methods_subset_invariance": "one pass over the queries: float32 rounding moves with their batch",
}


def _checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    big = linear_model(n_dims=12, n_positions=256)
    return parametrize_with_checks(
        [ICLRegressor(big), ICLClassifier(big)], expected_failed_checks=lambda est: FIT_QUALITY
    )


@_checks()
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
