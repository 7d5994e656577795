"""ICLRegressor.predict: the context read once for every query row (the transformer's one pass,
`after_prompt`) against one prompt per query row (the context re-read for each), side by side in
one process, on the shipped linear_d20 model's size: 40 rows of context, 20 features."""

import time

import numpy as np

from minicl import ICLRegressor
from minicl.model import ModelConfig, PromptModel, Transformer


class PerQuery(Transformer):
    """The transformer predicting each query from a prompt of its own (PromptModel's after_prompt)."""

    after_prompt = PromptModel.after_prompt


def seconds(regressor, X, n: int = 3) -> float:
    start = time.perf_counter()
    for _ in range(n):
        regressor.predict(X)
    return (time.perf_counter() - start) / n


def test_one_pass_against_one_prompt_per_query(benchmark, report):
    config = ModelConfig(n_dims=20, n_positions=41, n_embd=64, n_layer=3, n_head=2)
    ours, loop = Transformer(config).eval(), PerQuery(config).eval()
    loop.load_state_dict(ours.state_dict())
    rng = np.random.default_rng(0)
    X, y, queries = rng.normal(size=(40, 20)), rng.normal(size=40), rng.normal(size=(2000, 20))
    fast, slow = ICLRegressor(ours).fit(X, y), ICLRegressor(loop).fit(X, y)
    np.testing.assert_allclose(fast.predict(queries), slow.predict(queries), rtol=1e-3, atol=1e-4)
    ours_s = ref_s = 0.0
    for _ in range(2):  # interleaved, so that drift on a busy machine hits both alike
        ours_s += seconds(fast, queries) / 2
        ref_s += seconds(slow, queries) / 2
    benchmark.pedantic(lambda: fast.predict(queries), rounds=3, iterations=1)
    report("ICLRegressor.predict, 2000 queries on 40 context rows (one pass vs per query)", ours_s, ref_s)
