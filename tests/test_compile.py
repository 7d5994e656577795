"""The compiled fast path: no graph breaks, no recompiles over a curriculum, same numbers as eager."""

import pytest
import torch

from minicl.model import ModelConfig, Transformer
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import TrainStep, make_optimizer, train


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
@pytest.mark.parametrize("with_queries", [False, True])
@pytest.mark.parametrize("amp", [False, True])
def test_model_has_no_graph_breaks(pos_emb, with_queries, amp):
    torch._dynamo.reset()
    model = Transformer(ModelConfig(n_dims=4, n_positions=8, n_embd=32, n_layer=2, n_head=2, pos_emb=pos_emb))
    xs, ys = torch.randn(2, 8, 4), torch.randn(2, 8)
    args = (xs, ys, torch.randn(2, 8, 4)) if with_queries else (xs, ys)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        explanation = torch._dynamo.explain(model)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def short_training(compile: bool, amp: bool) -> tuple[list[float], dict]:
    """Losses and final weights of four steps of a small model from seed 0, over a changing length."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_dims=5, n_positions=12, n_embd=32, n_layer=2, n_head=2))
    task = build_task("linear", n_dims=5)
    sampler = PromptSampler(task, 12, make_generators(0))
    step = TrainStep(model, make_optimizer(model, 1e-3), task, 12, compile=compile, amp=amp)
    losses = [step(*sampler.sample(8, n_active=3), n_points).item() for n_points in (5, 5, 9, 12)]
    return losses, model.state_dict()


def test_compiled_step_matches_eager_step():
    torch._dynamo.reset()
    eager_losses, eager_weights = short_training(compile=False, amp=False)
    compiled_losses, compiled_weights = short_training(compile=True, amp=False)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    for k in eager_weights:
        torch.testing.assert_close(compiled_weights[k], eager_weights[k], rtol=1e-4, atol=1e-5)


def test_bf16_step_tracks_the_fp32_step():
    """The CPU default on CPUs with native bf16: the same training, to bf16's precision."""
    fp32, _ = short_training(compile=False, amp=False)
    bf16, _ = short_training(compile=False, amp=True)
    assert bf16 != fp32  # autocast really ran
    assert bf16 == pytest.approx(fp32, rel=0.03)


def test_a_whole_curriculum_compiles_at_most_twice(tiny_cfg, tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_cfg(
        "trainer.compile=true",
        "trainer.steps=8",
        "task.n_dims=6",
        "task.curriculum.dims.start=3",
        "task.curriculum.dims.end=6",
        "task.curriculum.dims.interval=2",
        "task.curriculum.points.start=5",
        "task.curriculum.points.inc=2",
        "task.curriculum.points.interval=2",
        "trainer.log_every=1",
    )
    train(cfg, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert '"active_dims": 3' in lines[0] and '"points": 11' in lines[-1]  # the curriculum really moved
    assert counters["stats"]["unique_graphs"] <= 2
