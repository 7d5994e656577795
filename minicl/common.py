"""What the commands and the run files share, below all of them: where to run, fresh evaluation
prompts, batched prediction, the pointwise metric, atomic file writes.

Imports torch and minicl.tasks only (it sits under `import minicl`).
"""

import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minicl.model import Predictor
from minicl.tasks import PromptSampler, Task, make_generators


@dataclass(frozen=True)
class Summary:
    """One model's result in one setting, per number of in-context examples k: the mean normalised
    error (or accuracy), its std over prompts and the 5-95% bootstrap band of the mean. metrics.json
    keeps it as {"mean", "std", "lo", "hi"} under settings.<setting>.models.<model>."""

    mean: list[float]
    std: list[float]
    lo: list[float]
    hi: list[float]

    @classmethod
    def read(cls, entry: dict) -> "Summary":
        return cls(entry["mean"], entry["std"], entry["lo"], entry["hi"])

    def to_json(self) -> dict[str, list[float]]:
        return asdict(self)

    def at(self, k: int) -> tuple[float, float, float]:
        """(mean, lo, hi) at k."""
        return self.mean[k], self.lo[k], self.hi[k]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available here; use trainer.device=cpu")
    return torch.device(name)


def bf16_is_fast(device: torch.device) -> bool:
    """What trainer.amp=null chooses: bf16 autocast on CUDA and on CPUs with native bf16 matmuls
    (AVX512-BF16 or AMX), where it measured faster than fp32; fp32 on other CPUs."""
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch.cpu, hence getattr
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return device.type == "cuda"


def standard_prompts(
    task: Task, n_prompts: int, n_points: int, seed: int, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh prompts at the full width from the evaluation streams of `seed` (disjoint from training)."""
    return PromptSampler(task, n_points, make_generators(seed, device, "eval")).sample(n_prompts)


@torch.no_grad()
def predict_in_batches(predictor: Predictor, xs, ys, queries=None, batch_size: int = 256) -> torch.Tensor:
    """predictor(xs, ys, queries) over slices of the prompts, concatenated: (B, N)."""
    parts = []
    for i in range(0, len(xs), batch_size):
        q = None if queries is None else queries[i : i + batch_size]
        parts.append(predictor(xs[i : i + batch_size], ys[i : i + batch_size], q))
    return torch.cat(parts)


def pointwise_metric(
    task: Task, preds: torch.Tensor, ys: torch.Tensor, normaliser: float | None = None
) -> torch.Tensor:
    """(B, N): squared error over the normaliser (the task's by default), or accuracy for classification:
    1 for the label's sign, 0 for the other, 0.5 for a prediction of 0 (a fair coin's expected score)."""
    if task.classification:
        return (torch.sign(preds) * ys + 1).float() / 2
    return (preds.float() - ys.float()) ** 2 / (normaliser or task.normaliser)


@contextmanager
def atomic(path: Path, mode: str = "wb"):
    """A file to write to in place of `path`: flushed to disk and renamed over `path` when the block
    ends, removed if it fails, so `path` is never half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj, path: Path) -> None:
    """torch.save, atomically."""
    with atomic(path) as f:
        torch.save(obj, f)


def write_json(path: Path, obj) -> None:
    """obj as indented JSON, atomically."""
    with atomic(path, "w") as f:
        f.write(json.dumps(obj, indent=1) + "\n")


def bootstrap_counts(n: int, seed: int, resamples: int = 1000) -> torch.Tensor:
    """(resamples, n) float64: how often each of n prompts is drawn in each bootstrap resample."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(n, (resamples, n), generator=gen)
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(resamples, n).double())
