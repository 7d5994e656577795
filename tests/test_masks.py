"""model.mask=prefix: what each prefix's pairs see, its composition and refusals, its training
with loss_on=last; and Fu et al.'s ill-conditioned inputs (task.kappa)."""

import json

import pytest
import torch

from minicl import load_model
from minicl.config import check_config, model_config
from minicl.model import ModelConfig, build_model
from minicl.settings import setting_prompts
from minicl.tasks import build_task
from minicl.train import train
from tests.helpers import assert_final_eval_is_the_models


@pytest.mark.parametrize("arch", ["lsa", "transformer"])
def test_model_mask_prefix_composes_for_lsa_and_transformer(compose_cfg, arch):
    cfg = compose_cfg("task=linear", "model=tiny", f"model.arch={arch}", "model.mask=prefix", "trainer.loss_on=last")
    check_config(cfg)
    assert model_config(cfg).mask == "prefix" and build_model(model_config(cfg)).config.mask == "prefix"
    assert model_config(compose_cfg("task=linear", f"model.arch={arch}")).mask == "causal"  # the default


def test_the_prefix_mask_is_refused_where_it_is_not_built_or_cannot_train():
    with pytest.raises(ValueError, match="mask='prefix' is built for arch in"):
        ModelConfig(n_dims=3, arch="lstm", mask="prefix")


def test_a_prefix_run_needs_the_loss_on_the_last_point_or_queries(compose_cfg):
    with pytest.raises(ValueError, match="model.mask=prefix reads each prefix in a pass of its own"):
        check_config(compose_cfg("task=linear", "model=tiny", "model.mask=prefix"))


@pytest.mark.parametrize("arch", ["lsa", "transformer"])
def test_prefix_predictions_read_each_prefix_whole(arch):
    """Output i is the query after the i pairs before it, whichever way it is computed; nothing at or
    after position i moves output i; and the pairs see each other, so with the same weights the
    predictions differ from the causal mask's (from 2 pairs on, where a pair has one after it)."""
    torch.manual_seed(0)
    config = ModelConfig(n_dims=4, arch=arch, n_layer=2, n_head=2, n_embd=16, n_positions=9, mask="prefix")
    model = build_model(config).eval()
    xs, ys = torch.randn(3, 8, 4), torch.randn(3, 8)
    with torch.no_grad():
        full = model(xs, ys)
        one_at_a_time = torch.stack(
            [model.after_prompt(xs[:, :i], ys[:, :i], xs[:, i : i + 1])[:, 0] for i in range(8)], 1
        )
        torch.testing.assert_close(full, one_at_a_time, rtol=1e-5, atol=1e-5)
        later = ys.clone()
        later[:, 5:] += 1.0
        torch.testing.assert_close(model(xs, later)[:, :6], full[:, :6], rtol=1e-6, atol=1e-6)
        states = model.hidden_states(xs, ys)
        assert len(states) == 3 and all(s.shape[:2] == (3, 8) for s in states)
        causal = build_model(ModelConfig(**{**config.__dict__, "mask": "causal"}))
        causal.load_state_dict(model.state_dict())
        assert (causal.eval()(xs, ys) - full)[:, 2:].abs().min() > 1e-7


def test_a_prefix_run_trains_with_the_loss_on_the_last_point_and_reloads(tiny_cfg, tmp_path):
    for arch in ("lsa", "transformer"):
        run = tmp_path / arch
        model = train(tiny_cfg(f"model.arch={arch}", "model.mask=prefix", "trainer.loss_on=last"), run)
        assert load_model(run).config.mask == "prefix"
        xs, ys = torch.randn(2, 11, 5), torch.randn(2, 11)
        torch.testing.assert_close(load_model(run)(xs, ys), model(xs, ys), rtol=0, atol=0)
        assert_final_eval_is_the_models(run)
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(map(torch.isfinite, torch.tensor(losses)))


def test_kappa_inputs_are_fus_ill_conditioned_inputs_with_a_rotation_per_prompt():
    """task.kappa: per prompt, the inputs' covariance has eigenvalues kappa^2 and 1 (half the dims
    each) in a random basis of its own, scaled so that E||x||^2 = d; kappa = 1 draws nothing."""
    task = build_task("linear", n_dims=6, kappa=10.0)
    prompts = setting_prompts("standard", task, 4, 4000, seed=0)
    covs = torch.stack([x.T.cov() for x in prompts.xs.double()])
    eig = torch.linalg.eigvalsh(covs)  # ascending
    scale = 6 / (3 * 100 + 3)
    torch.testing.assert_close(eig[:, :3], torch.full((4, 3), scale, dtype=torch.float64), rtol=0.1, atol=0)
    torch.testing.assert_close(eig[:, 3:], torch.full((4, 3), 100 * scale, dtype=torch.float64), rtol=0.1, atol=0)
    tops = torch.linalg.eigh(covs)[1][:, :, -3:]  # the scaled half: a different subspace per prompt
    assert (tops[0].T @ tops[1]).svd().S.min() < 0.9
    plain = build_task("linear", n_dims=6)
    same = setting_prompts("standard", plain, 4, 10, seed=0).xs
    assert torch.equal(same, setting_prompts("standard", build_task("linear", n_dims=6, kappa=1.0), 4, 10, seed=0).xs)
    with pytest.raises(ValueError, match="task.kappa must be >= 1"):
        build_task("linear", n_dims=6, kappa=0.5)


def test_the_kappa_setting_draws_the_same_inputs_for_an_isotropic_task():
    task = build_task("linear", n_dims=6)
    eig = torch.linalg.eigvalsh(setting_prompts("kappa_10", task, 2, 4000, seed=0).xs[0].double().T.cov())
    assert eig[-1] / eig[0] == pytest.approx(100, rel=0.25)
