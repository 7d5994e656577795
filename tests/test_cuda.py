"""Checks that need a GPU (marked cuda: skipped where CUDA is absent; run by benchmarks/gpu_check.sh)."""

import pytest
import torch

from minicl.baselines import LeastSquares
from minicl.model import ModelConfig, Transformer
from minicl.tasks import PromptSampler, build_task, make_generators
from minicl.train import TrainStep, make_optimizer, train

pytestmark = pytest.mark.cuda


def test_sampling_stays_on_the_gpu():
    task = build_task("decision_tree", n_dims=20)
    xs, ys = PromptSampler(task, 101, make_generators(0, "cuda")).sample(64, n_active=7)
    assert xs.is_cuda and ys.is_cuda and (xs[..., 7:] == 0).all()


def test_compiled_bf16_step_tracks_eager_fp32():
    def losses(compile, amp):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(n_dims=20, n_positions=41, n_embd=128, n_layer=4, n_head=4)).cuda()
        task = build_task("linear", n_dims=20)
        sampler = PromptSampler(task, 41, make_generators(0, "cuda"))
        step = TrainStep(model, make_optimizer(model, 1e-4), task, 41, compile=compile, amp=amp)
        return torch.stack([step(*sampler.sample(64, 10), n) for n in (11, 11, 21, 41)]).cpu()

    torch.testing.assert_close(losses(True, True), losses(False, False), rtol=0.05, atol=0.05)


def test_training_run_on_cuda_writes_a_cpu_loadable_checkpoint(tiny_cfg, tmp_path):
    from minicl import load_model

    model = train(tiny_cfg("trainer.device=cuda", "trainer.steps=20"), tmp_path)
    assert next(model.parameters()).is_cuda
    assert next(load_model(tmp_path).parameters()).device.type == "cpu"


def test_baselines_on_the_gpu_agree_with_the_cpu():
    xs, ys = torch.randn(32, 41, 20), torch.randn(32, 41)
    torch.testing.assert_close(LeastSquares()(xs.cuda(), ys.cuda()).cpu(), LeastSquares()(xs, ys), rtol=1e-4, atol=1e-4)
