"""Evaluation: prompts for each setting, every predictor through the same call shape, metrics and plots."""

import torch

from minicl.tasks import PromptSampler, make_generators


@torch.no_grad()
def predict_in_batches(predictor, xs: torch.Tensor, ys: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """predictor(xs, ys) over slices of the prompts, concatenated; (B, N) on the prompts' device."""
    return torch.cat([predictor(xs[i : i + batch_size], ys[i : i + batch_size]) for i in range(0, len(xs), batch_size)])


def pointwise_metric(task, preds: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, N): squared error over the task's normaliser, or 0/1 accuracy for classification."""
    if task.classification:
        return (torch.sign(preds) == ys).float()
    return (preds.float() - ys.float()) ** 2 / task.normaliser


def standard_prompts(task, n_prompts: int, n_points: int, seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh prompts at the full width from the evaluation streams of `seed` (disjoint from training)."""
    return PromptSampler(task, n_points, make_generators(seed, device, "eval")).sample(n_prompts)
