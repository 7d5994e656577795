"""minicl.diversity on inputs whose answer is known: predictions that are dmmse's or ridge's (plus
noise) read as closer to that one, a planted order gives its threshold, and an order out of
place gives none."""

import pytest
import torch

from minicl import diversity
from minicl.common import bootstrap_counts
from minicl.train import train


def stand_ins(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dmmse, ridge = torch.randn(n, 12, generator=gen), torch.randn(n, 12, generator=gen)
    return dmmse, ridge, 0.1 * torch.randn(n, 12, generator=gen)


@pytest.mark.parametrize("like", ["dmmse", "ridge"])
def test_predictions_read_as_the_predictor_they_are(like):
    dmmse, ridge, noise = stand_ins()
    preds = (dmmse if like == "dmmse" else ridge) + noise
    found = diversity.closeness(preds, dmmse, ridge, bootstrap_counts(len(preds), 0))
    assert found["closer"] == like
    assert found[f"to_{like}"] == pytest.approx(0.01, rel=0.1)


def test_halfway_between_is_a_tie():
    dmmse, ridge, noise = stand_ins(200)
    preds = torch.cat(((dmmse + ridge) / 2 + noise,) * 2)  # the second half with the two swapped: mean 0 exactly
    found = diversity.closeness(preds, torch.cat((dmmse, ridge)), torch.cat((ridge, dmmse)), bootstrap_counts(400, 0))
    assert found["closer"] == "tie" and found["difference_band"][0] < 0 < found["difference_band"][1]


@pytest.mark.parametrize(
    "order, expected",
    [
        ({2: "dmmse", 8: "dmmse", 32: "ridge", 128: "ridge"}, 32),
        ({2: "dmmse", 8: "ridge", 32: "dmmse", 128: "ridge"}, None),  # back to dmmse: no threshold
        ({2: "dmmse", 8: "tie", 32: "ridge"}, None),  # a tie is neither
        ({2: "ridge", 8: "ridge"}, None),  # never dmmse-like
        ({2: "dmmse", 8: "dmmse"}, None),  # never ridge-like
    ],
)
def test_the_threshold_of_a_planted_order(order, expected):
    found = diversity.threshold(order)
    assert found["threshold"] == expected and found["holds"] is (expected is not None)


def test_the_verdict_needs_every_seed_and_bands_their_thresholds():
    def run(seed, m, closer):
        return {"seed": seed, "num_tasks": m, "fresh": {"closer": closer}}

    runs = [run(0, 2, "dmmse"), run(0, 32, "ridge"), run(1, 2, "dmmse"), run(1, 32, "dmmse"), run(1, 128, "ridge")]
    runs.append({"seed": 0, "num_tasks": None, "fresh": {}})  # a fresh-task run does not vote
    found = diversity.judge(runs)
    assert found["holds"] and found["threshold_band"] == [32, 128]
    found = diversity.judge(runs + [run(2, 2, "ridge"), run(2, 32, "ridge")])
    assert not found["holds"] and found["threshold_band"] is None


def test_the_command_reads_pool_and_fresh_runs(tiny_cfg, tmp_path):
    for name, pool in (("pool", "task.num_tasks=4"), ("fresh", "task.num_tasks=null")):
        train(tiny_cfg(pool), tmp_path / "runs" / name)
    out = diversity.main([str(tmp_path / "runs"), "--out", str(tmp_path / "d.json"), "--n-prompts", "64"])
    by_pool = {r["num_tasks"]: r for r in out["runs"]}
    assert set(by_pool) == {4, None} and out["kind"] == "diversity"
    assert {"dmmse", "ridge", "model"} == set(by_pool[4]["fresh"]["errors"]) and "pool" in by_pool[4]
    assert set(by_pool[None]["fresh"]["errors"]) == {"model", "ridge"} and len(by_pool[None]["ratio_to_ridge"]) == 2
    assert by_pool[4]["pool"]["errors"]["dmmse"][1] < by_pool[4]["fresh"]["errors"]["dmmse"][1]  # dmmse knows its pool
    assert out["per_seed"]["0"]["order"] == {"4": by_pool[4]["fresh"]["closer"]} and not out["holds"]
