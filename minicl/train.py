"""Training: `python -m minicl.train task=<name> [model=<size>] [experiment=<name>] [trainer.<knob>=...]`.

`train(cfg, run_dir)` is the plain function behind the Hydra entry point; tests call it directly.
Rerunning the same command in the same run directory resumes from its last checkpoint.
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from minicl.baselines import LeastSquares
from minicl.checkpoint import latest_checkpoint, save_atomic, save_checkpoint
from minicl.config import check_config, model_config, register_schemas, task_from_config
from minicl.evaluate import pointwise_metric, predict_in_batches, standard_prompts
from minicl.model import Transformer
from minicl.tasks import PromptSampler, curriculum_at, make_generators

register_schemas()

# Settings that may change between a run and its resume without changing its results.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "snapshot_every", "log_every", "eval_prompts", "evaluate_at_end", "progress"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available here; use trainer.device=cpu")
    return torch.device(name)


def point_loss(task, preds: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, N) training loss: squared error, or the logistic loss for classification."""
    if task.classification:
        return F.binary_cross_entropy_with_logits(preds, (ys + 1) / 2, reduction="none")
    return (preds - ys) ** 2


def config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between two resolved configs, ignoring the resumable trainer knobs."""
    diffs = []
    for section in sorted(saved.keys() | current.keys()):
        a, b = saved.get(section, {}), current.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                diffs.append(f"{section}: {a!r} -> {b!r}")
            continue
        for key in sorted(a.keys() | b.keys()):
            if section == "trainer" and key in RESUMABLE_CHANGES:
                continue
            if a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines written after `last_step` (by a run that died before its next checkpoint)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in lines))


def final_report(model: Transformer, task, cfg: DictConfig, device: torch.device) -> dict:
    """Normalised error (accuracy for classification) at k = 2d in-context examples on fresh prompts."""
    n_points = cfg.task.curriculum.points.end
    k = min(2 * cfg.task.n_dims, n_points - 1)
    xs, ys = standard_prompts(task, cfg.trainer.eval_prompts, n_points, cfg.trainer.seed, device)
    model.eval()
    report = {"k": k, "transformer": pointwise_metric(task, predict_in_batches(model, xs, ys), ys)[:, k].mean().item()}
    if not task.classification:
        report["least_squares"] = pointwise_metric(task, LeastSquares()(xs, ys), ys)[:, k].mean().item()
    model.train()
    return report


def train(cfg: DictConfig, run_dir: str | Path) -> Transformer:
    """Train (or resume) the run described by `cfg` in `run_dir`; returns the trained model."""
    check_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tr = cfg.trainer
    resolved = OmegaConf.to_container(cfg, resolve=True)
    device = resolve_device(tr.device)
    use_compile = device.type == "cuda" if tr.compile is None else tr.compile
    use_amp = device.type == "cuda" if tr.amp is None else tr.amp
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    task = task_from_config(cfg.task)
    mc = model_config(cfg)
    torch.manual_seed(tr.seed)  # model initialisation and dropout
    model = Transformer(mc).to(device)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.Adam(model.parameters(), lr=tr.lr, **fused)
    n_points_max = cfg.task.curriculum.points.end
    sampler = PromptSampler(
        task, n_points_max, make_generators(tr.seed, device),
        cfg.task.num_tasks, cfg.task.num_training_examples, pool_seed=tr.seed,
    )

    step = 0
    log_path = run_dir / "metrics.jsonl"
    state = latest_checkpoint(run_dir)
    if state is not None:
        diffs = config_differences(state["config"], resolved)
        if diffs:
            raise ValueError(f"{run_dir} holds a run with a different config; refusing to resume: " + "; ".join(diffs))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["rng"]["sampler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        step = state["step"]
        truncate_log(log_path, step)
        print(f"resuming {run_dir} from step {step}")

    def checkpoint() -> dict:
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
            "config": resolved, "model_config": asdict(mc),
            "rng": {
                "sampler": sampler.state_dict(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
        }

    forward = torch.compile(model) if use_compile else model
    # Compiled: always the full prompt, loss masked to the curriculum's points (causal attention makes
    # this exact), so shapes never change. Eager: slice to the curriculum's points, which is cheaper.
    static_shapes = use_compile
    positions = torch.arange(n_points_max, device=device)
    loss_sum = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    last_log_time, last_log_step = time.perf_counter(), step
    bar = tqdm(total=tr.steps, initial=step, disable=not tr.progress, dynamic_ncols=True)
    model.train()
    while step < tr.steps:
        n_dims, n_points = curriculum_at(cfg.task.curriculum, step, tr.curriculum)
        xs, ys = sampler.sample(tr.batch_size, n_dims)
        if not static_shapes:
            xs, ys = xs[:, :n_points], ys[:, :n_points]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            preds = forward(xs, ys)
        losses = point_loss(task, preds, ys)
        if static_shapes:
            loss = (losses * (positions < n_points)).sum() / (losses.shape[0] * n_points)
        else:
            loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tr.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
        opt.step()
        loss = loss.detach()
        loss_sum += loss
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        step += 1
        bar.update(1)

        log_now, save_now = step % tr.log_every == 0 or step == tr.steps, step % tr.checkpoint_every == 0 or step == tr.steps
        if not (log_now or save_now):
            continue
        if first_bad.item() >= 0:  # host sync only on logging and checkpoint steps
            raise FloatingPointError(
                f"non-finite loss at step {first_bad.item()}; stopping. The last good checkpoint "
                f"in {run_dir} is kept (lower trainer.lr or set trainer.grad_clip)"
            )
        if log_now:
            now = time.perf_counter()
            record = {
                "step": step, "loss": loss_sum.item() / (step - last_log_step), "active_dims": n_dims,
                "points": n_points, "steps_per_s": (step - last_log_step) / (now - last_log_time),
            }
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}", dims=n_dims, points=n_points)
            loss_sum.zero_()
            last_log_time, last_log_step = now, step
        if save_now:
            save_checkpoint(checkpoint(), run_dir)
        if tr.snapshot_every and step % tr.snapshot_every == 0:
            snapshot = checkpoint()
            del snapshot["optimizer"]
            save_atomic(snapshot, run_dir / f"model_{step}.pt")
    bar.close()

    report = final_report(model, task, cfg, device)
    (run_dir / "final_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    metric = "accuracy" if task.classification else "normalised squared error"
    line = ", ".join(f"{name} {report[name]:.4f}" for name in report if name != "k")
    print(f"{metric} at k={report['k']} in-context examples ({tr.eval_prompts} fresh prompts): {line}")
    if tr.evaluate_at_end:
        from minicl.evaluate import evaluate_run

        evaluate_run(run_dir)
    return model.eval()


@hydra.main(version_base=None, config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
