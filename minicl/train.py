"""Training: `python -m minicl.train task=<name> [model=<size>] [experiment=<name>] [trainer.<knob>=...]`.

`train(cfg, run_dir)` is the plain function behind the Hydra entry point; tests call it directly.
It reads as the run's story: set up (device, processes, run directory, model, optimiser,
sampler), resume from a checkpoint, the step loop (with what happens at a logging or checkpoint
step), the final report. What those pieces share lives in one `Run`.
Rerunning the same command in the same run directory resumes from its last checkpoint.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from minicl import rundir
from minicl.baselines import LeastSquares
from minicl.common import (
    pointwise_metric,
    predict_in_batches,
    resolve_device,
    save_atomic,
    standard_prompts,
    write_json,
)
from minicl.config import (
    CONF,
    check_config,
    check_resumable,
    model_config,
    plain,
    register_schemas,
    resolved_config,
    task_from_config,
)
from minicl.evaluate import evaluate_run
from minicl.model import ModelConfig, PromptModel, build_model
from minicl.tasks import PromptSampler, Task, curriculum_at, make_generators, standardize
from minicl.tracking import Tracker, make_tracker

register_schemas()


def point_loss(task: Task, preds: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, N) training loss: squared error, or the logistic loss for classification."""
    if task.classification:
        return F.binary_cross_entropy_with_logits(preds, (ys + 1) / 2, reduction="none")
    return (preds - ys) ** 2


def learning_rate(tr, step: int) -> float:
    """The learning rate of `step`: a pure function of the step, so a resumed run is exact."""
    if step < tr.warmup_steps:
        return tr.lr * (step + 1) / tr.warmup_steps
    if tr.schedule == "cosine":
        progress = (step - tr.warmup_steps) / max(1, tr.steps - tr.warmup_steps)
        return tr.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if tr.schedule == "wsd":  # warm-up, stable, decay: linear to 0 at trainer.steps over the last decay_steps
        return tr.lr * min(1.0, (tr.steps - step) / tr.decay_steps)
    return tr.lr


PLATEAU = (0.9, 1.1)  # a model whose error at k is within these shares of predicting 0's never left the plateau


def final_report(model: PromptModel, task: Task, cfg: DictConfig, device: torch.device, run_dir: Path) -> dict:
    """Normalised error (accuracy for classification) at k = 2d in-context examples on fresh
    prompts, next to least squares'; printed and written to run_dir/final_eval.json."""
    if cfg.trainer.loss_on == "queries":
        return queries_report(model, cfg, device, run_dir)
    n_points = cfg.task.curriculum.points.end
    k = min(2 * cfg.task.n_dims, n_points - 1)
    xs, ys = standard_prompts(task, cfg.trainer.eval_prompts, n_points, cfg.trainer.seed, device)
    model.eval()
    report = {
        "k": k,
        model.config.arch: pointwise_metric(task, predict_in_batches(model, xs, ys), ys)[:, k].mean().item(),
    }
    if not task.classification:
        report["least_squares"] = pointwise_metric(task, LeastSquares()(xs, ys), ys)[:, k].mean().item()
        report["zero"] = pointwise_metric(task, torch.zeros_like(ys), ys)[:, k].mean().item()
        share = report[model.config.arch] / max(report["zero"], 1e-12)
        report["plateau"], report["worse_than_zero"] = PLATEAU[0] <= share <= PLATEAU[1], share > PLATEAU[1]
    write_json(run_dir / "final_eval.json", report)
    metric = "accuracy" if task.classification else "normalised squared error"
    line = ", ".join(f"{name} {report[name]:.4f}" for name in report if name not in ("k", "plateau", "worse_than_zero"))
    print(f"{metric} at k={k} in-context examples ({cfg.trainer.eval_prompts} fresh prompts): {line}")
    if report.get("plateau"):
        print(
            f"the model stayed on the plateau: its error is {PLATEAU[0]:g} to {PLATEAU[1]:g} of predicting 0's, the "
            "labels' spread (final_eval.json: plateau true); a longer warm-up, a dims curriculum or another seed "
            "may leave it"
        )
    if report.get("worse_than_zero"):
        print(
            f"the model is worse than predicting 0 (more than {PLATEAU[1]:g} of its error; final_eval.json: "
            "worse_than_zero true)"
        )
    return report


@torch.no_grad()
def queries_errors(model: PromptModel, cfg: DictConfig, n_prompts: int, seed: int, device: torch.device) -> dict:
    """trainer.loss_on=queries: each prompt's mean squared error on the standardised labels of
    trainer.queries rows after contexts of 10, 20, 40 and the most rows (fresh prompts of `seed`),
    for the model, ridge (lam = 1) on the same standardised context and the context's mean (0):
    {context: {name: (n_prompts,)}}."""
    tr, most = cfg.trainer, cfg.task.curriculum.points.end
    sampler = PromptSampler(task_from_config(cfg.task), most + tr.queries, make_generators(seed, device, "eval"))
    raw_xs, raw_ys = sampler.sample(n_prompts)
    model.eval()
    errors = {}
    for c in sorted({min(c, most) for c in (10, 20, 40, most)}):
        rows = torch.cat((torch.arange(c), torch.arange(most, most + tr.queries)))
        xs, ys = standardize(raw_xs[:, rows], raw_ys[:, rows], c)
        cx, cy, qx, qy = xs[:, :c], ys[:, :c], xs[:, c:], ys[:, c:]
        eye = torch.eye(xs.shape[-1], device=device)
        w = torch.linalg.solve(cx.mT @ cx + eye, (cx.mT @ cy[..., None]))[..., 0]
        preds = {"model": model.after_prompt(cx, cy, qx), "ridge": (qx @ w[..., None])[..., 0], "mean": 0 * qy}
        errors[str(c)] = {name: ((p - qy) ** 2).mean(1) for name, p in preds.items()}
    return errors


def queries_report(model: PromptModel, cfg: DictConfig, device: torch.device, run_dir: Path) -> dict:
    """queries_errors' means on trainer.eval_prompts prompts, printed and written to run_dir/final_eval.json."""
    errors = queries_errors(model, cfg, cfg.trainer.eval_prompts, cfg.trainer.seed, device)
    report = {c: {name: e.mean().item() for name, e in by_name.items()} for c, by_name in errors.items()}
    write_json(run_dir / "final_eval.json", report)
    for c, means in report.items():
        print(f"squared error after {c} context rows: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    return report


class TrainStep:
    """One optimisation step on a batch, `step(xs, ys, n_points) -> loss` (a detached device tensor).

    Compiled: the model always sees the full prompt and the loss is masked to the curriculum's
    points (causal attention makes this exact), so shapes never change and nothing recompiles.
    Eager: the prompt is sliced to the curriculum's points, which is cheaper. `skip_nonfinite`
    drops an update whose gradient is not finite (a host sync per step) and counts it.
    """

    def __init__(
        self,
        model,
        opt,
        task,
        n_points_max: int,
        compile: bool,
        amp: bool,
        grad_clip: float | None = None,
        skip_nonfinite: bool = False,
        last_only: bool = False,
        wrapper=None,
        compile_mode: str = "default",
        queries: int = 0,
    ):
        self.model, self.opt, self.task, self.amp, self.grad_clip = model, opt, task, amp, grad_clip
        self.skip_nonfinite, self.skipped, self.last_only, self.queries = skip_nonfinite, 0, last_only, queries
        self.device = next(model.parameters()).device
        wrapped = wrapper(model) if wrapper is not None else model  # e.g. DistributedDataParallel
        # the context's length changes every step (queries), or a prefix mask reads the last point
        # after the pairs before it in one pass (last_only): dynamic shapes
        self.after = bool(queries) or (last_only and model.config.mask == "prefix")
        if self.after:
            self.forward = torch.compile(model.after_prompt, dynamic=True) if compile else model.after_prompt
        else:
            self.forward = torch.compile(wrapped, mode=compile_mode) if compile else wrapped
        self.static_shapes = compile and not self.after
        self.positions = torch.arange(n_points_max, device=self.device)

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor, n_points: int) -> torch.Tensor:
        if self.queries:  # a context of n_points rows and the prompt's last `queries` rows, as ICLRegressor reads them
            rows = torch.cat((torch.arange(n_points), torch.arange(xs.shape[1] - self.queries, xs.shape[1])))
            xs, ys = standardize(xs[:, rows], ys[:, rows], n_points)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                preds = self.forward(xs[:, :n_points], ys[:, :n_points], xs[:, n_points:])
            loss = point_loss(self.task, preds, ys[:, n_points:]).mean()
            return self.update(loss)
        if self.after:  # last_only with the prefix mask: the last point after the pairs before it
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                preds = self.forward(xs[:, : n_points - 1], ys[:, : n_points - 1], xs[:, n_points - 1 : n_points])
            return self.update(point_loss(self.task, preds, ys[:, n_points - 1 : n_points]).mean())
        if not self.static_shapes:
            xs, ys = xs[:, :n_points], ys[:, :n_points]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            preds = self.forward(xs, ys)
        losses = point_loss(self.task, preds, ys)
        if self.last_only:  # the prediction after the whole prompt (the curriculum's points)
            loss = losses[:, n_points - 1].mean()
        elif self.static_shapes:
            loss = (losses * (self.positions < n_points)).sum() / (losses.shape[0] * n_points)
        else:
            loss = losses.mean()
        return self.update(loss)

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None or self.skip_nonfinite:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip or math.inf)
            if self.skip_nonfinite and not torch.isfinite(norm).item():  # gradients are all-reduced: ranks agree
                self.skipped += 1
                return torch.zeros_like(loss.detach())
        self.opt.step()
        return loss.detach()


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam, fused on CUDA and foreach elsewhere (one kernel or op per group, not per tensor)."""
    if next(model.parameters()).is_cuda:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device): one process unless started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


@dataclass
class Run:
    """What the pieces of one training run share."""

    cfg: DictConfig  # resolved (config.resolved_config): trainer.amp and trainer.compile as they run
    run_dir: Path
    rank: int
    world: int
    device: torch.device
    task: Task
    model_config: ModelConfig
    model: PromptModel
    opt: torch.optim.Optimizer
    sampler: PromptSampler
    step: int = 0
    train_step: TrainStep = field(init=False)  # made once the run has resumed
    tracker: Tracker | None = None  # logger=tensorboard|wandb, on the writing rank

    @property
    def writes(self) -> bool:
        return self.rank == 0  # rank 0 alone writes logs and checkpoints

    @property
    def log_path(self) -> Path:
        return self.run_dir / rundir.LOG

    def checkpoint(self) -> dict:
        return rundir.checkpoint_state(
            self.model, self.opt, self.sampler, self.step, plain(self.cfg), self.model_config
        )


@dataclass
class Tally:
    """What the loop keeps between logging steps: the loss summed on the device (read only at
    logging steps), the first step with a non-finite loss (-1: none), and where the last log was."""

    loss_sum: torch.Tensor
    first_bad: torch.Tensor
    since_step: int
    since_time: float = field(default_factory=time.perf_counter)

    @classmethod
    def starting_at(cls, run: Run) -> "Tally":
        zero = torch.zeros((), device=run.device)
        return cls(zero, torch.full((), -1, device=run.device, dtype=torch.long), run.step)

    def add(self, loss: torch.Tensor, step: int) -> None:
        self.loss_sum += loss
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)


def train(cfg: DictConfig, run_dir: str | Path) -> PromptModel:
    """Train (or resume) the run described by `cfg` in `run_dir`; returns the trained model.

    Under torchrun every rank draws the global batch from the same generators and keeps its
    slice, so N processes see the prompts one process would; rank 0 alone writes."""
    check_config(cfg)
    run = set_up(cfg, run_dir)
    resume(run)
    run.train_step = make_train_step(run)  # after resuming: DDP broadcasts the weights it finds
    announce(run)
    run.tracker = make_tracker(run.cfg.logger, run.run_dir, plain(run.cfg)) if run.writes else None
    try:
        run_steps(run)
    finally:
        if run.tracker:
            run.tracker.close()
    if run.writes:
        final_report(run.model, run.task, run.cfg, run.device, run.run_dir)
        if run.cfg.trainer.evaluate_at_end:
            evaluate_run(run.run_dir)
    if run.world > 1:
        dist.barrier()
    run.model.trained_on = run.cfg.task.name
    return run.model.eval()


def set_up(cfg: DictConfig, run_dir: str | Path) -> Run:
    """Device and processes, the run directory, and a freshly initialised model, optimiser and sampler."""
    tr = cfg.trainer
    rank, world, device = init_distributed(tr.device)
    if tr.batch_size % world:
        raise ValueError(f"trainer.batch_size={tr.batch_size} does not split over {world} processes")
    if world > 1:  # every rank uses rank 0's run directory
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = shared[0]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    task, mc = task_from_config(cfg.task), model_config(cfg)
    torch.manual_seed(tr.seed)  # model initialisation and dropout
    model = build_model(mc).to(device)
    if rank == 0:
        rundir.check_writable(run_dir, 3 * 3 * 4 * model.num_parameters())  # weights + Adam's two moments, 3 files
    if (tr.loss_on == "queries" or mc.mask == "prefix") and world > 1:  # both train through after_prompt,
        # which DistributedDataParallel does not wrap: the ranks' gradients would not be averaged
        what = "trainer.loss_on=queries" if tr.loss_on == "queries" else "model.mask=prefix"
        raise ValueError(f"{what} trains in one process; run it without torchrun")
    sampler = PromptSampler(
        task,
        cfg.task.curriculum.points.end + (tr.queries if tr.loss_on == "queries" else 0),
        make_generators(tr.seed, device),
        cfg.task.num_tasks,
        cfg.task.num_training_examples,
        pool_seed=tr.seed,
    )
    return Run(
        resolved_config(cfg, device),
        run_dir,
        rank,
        world,
        device,
        task,
        mc,
        model,
        make_optimizer(model, tr.lr),
        sampler,
    )


def start_from(model: PromptModel, source: str) -> None:
    """Load the weights of `source` (trainer.init) into `model`, refusing a model of another config."""
    try:
        state = rundir.read_run(source)
    except (FileNotFoundError, rundir.CheckpointError) as e:
        raise type(e)(f"trainer.init={source}: {e}") from e
    theirs = ModelConfig(**state["model_config"])
    if theirs != model.config:
        raise ValueError(
            f"trainer.init={source} holds a model of another config: {theirs}, not this run's {model.config}"
        )
    model.load_state_dict(state["model"])


def resume(run: Run) -> None:
    """Continue from the run directory's newest intact checkpoint, if any; else start from
    trainer.init's weights, if it names any."""
    state = rundir.latest_checkpoint(run.run_dir)
    if state is not None:
        check_resumable(state["config"], run.cfg, run.run_dir)
        run.step = rundir.restore(state, run.model, run.opt, run.sampler)
    elif run.cfg.trainer.init:
        start_from(run.model, run.cfg.trainer.init)
    if not run.step and run.writes:
        rundir.write_provenance(run.run_dir)
    if run.step and run.writes:
        rundir.truncate_log(run.run_dir, run.step)
        print(f"resuming {run.run_dir} from step {run.step}")


def make_train_step(run: Run) -> TrainStep:
    """The step with the run's precision and compilation (trainer.amp and trainer.compile, resolved)."""
    tr, device = run.cfg.trainer, run.device
    wrapper = None
    if run.world > 1:
        wrapper = lambda m: DistributedDataParallel(m, device_ids=[device] if device.type == "cuda" else None)  # noqa: E731
    return TrainStep(
        run.model,
        run.opt,
        run.task,
        run.cfg.task.curriculum.points.end,
        compile=tr.compile,
        amp=tr.amp,
        grad_clip=tr.grad_clip,
        skip_nonfinite=tr.on_nonfinite == "skip",
        last_only=tr.loss_on == "last",
        wrapper=wrapper,
        compile_mode=tr.compile_mode,
        queries=tr.queries if tr.loss_on == "queries" else 0,
    )


def announce(run: Run) -> None:
    """One line at the start: how many parameters, where, compiled or eager, which precision."""
    if not run.writes:
        return
    where = f"{run.device}" + (f" in {run.world} processes" if run.world > 1 else "")
    if run.device.type == "cpu":
        threads = torch.get_num_threads()
        where += f" ({threads} thread{'s' * (threads > 1)}, process {os.getpid()})"
    ts = run.train_step
    how = f"compiled ({run.cfg.trainer.compile_mode})" if ts.static_shapes else "eager"
    precision = "bf16 autocast" if ts.amp else "fp32 (TF32 matmuls)" if run.device.type == "cuda" else "fp32"
    size = f"{run.model.num_parameters():,} parameters"
    print(f"training a {run.model_config.arch} of {size} on {where}: {how}, {precision}")


def context_length(tr: DictConfig, step: int, most: int) -> int:
    """trainer.loss_on=queries: the step's context rows, uniform in min_context..most, a pure function of the step."""
    return int(np.random.default_rng([tr.seed, step]).integers(min(tr.min_context, most), most + 1))


def run_steps(run: Run) -> None:
    """The step loop: sample the global batch, step on this rank's slice of it, and at logging or
    checkpoint steps check the loss, log and save."""
    tr = run.cfg.trainer
    mine = slice(run.rank * tr.batch_size // run.world, (run.rank + 1) * tr.batch_size // run.world)
    tally = Tally.starting_at(run)
    scheduled = tr.schedule != "constant" or tr.warmup_steps > 0
    bar = tqdm(total=tr.steps, initial=run.step, disable=not tr.progress or not run.writes, dynamic_ncols=True)
    run.model.train()
    while run.step < tr.steps:
        n_dims, n_points = curriculum_at(run.cfg.task.curriculum, run.step, tr.curriculum)
        if tr.loss_on == "queries":
            n_points = context_length(tr, run.step, n_points)
        xs, ys = run.sampler.sample(tr.batch_size, n_dims)  # the global batch, the same on every rank
        if scheduled:
            for group in run.opt.param_groups:
                group["lr"] = learning_rate(tr, run.step)
        tally.add(run.train_step(xs[mine], ys[mine], n_points), run.step)
        run.step += 1
        bar.update(1)
        at_boundary(run, tally, bar, n_dims, n_points)
    bar.close()


def at_boundary(run: Run, tally: Tally, bar: tqdm, n_dims: int, n_points: int) -> None:
    """At a logging, checkpoint or snapshot step (the only host syncs): stop on a non-finite loss, log, save."""
    tr, step = run.cfg.trainer, run.step
    log_now = step % tr.log_every == 0 or step == tr.steps
    save_now = step % tr.checkpoint_every == 0 or step == tr.steps
    snapshot_now = tr.snapshot_every and step % tr.snapshot_every == 0
    if not (log_now or save_now or snapshot_now):
        return
    if run.world > 1:  # the global mean loss, and a bad step on any rank stops every rank
        dist.all_reduce(tally.loss_sum)
        tally.loss_sum /= run.world
        dist.all_reduce(tally.first_bad, op=dist.ReduceOp.MAX)
    if tally.first_bad.item() >= 0:
        raise FloatingPointError(
            f"non-finite loss at step {tally.first_bad.item()}; stopping. The last good checkpoint in {run.run_dir} "
            "is kept (lower trainer.lr, set trainer.grad_clip, or trainer.on_nonfinite=skip)"
        )
    if log_now:
        if run.writes:
            log(run, tally, bar, n_dims, n_points)
        tally.loss_sum.zero_()
        tally.since_step = step
    if save_now and run.writes:
        rundir.save(run.checkpoint(), run.run_dir)
    if snapshot_now and run.writes:
        snapshot = run.checkpoint()
        del snapshot["optimizer"]
        rundir.write(lambda: save_atomic(snapshot, run.run_dir / f"model_{step}.pt"), run.run_dir, step, "snapshot")


def log(run: Run, tally: Tally, bar: tqdm, n_dims: int, n_points: int) -> None:
    """One line of metrics.jsonl (mean loss since the last log, curriculum, speed) and the bar's postfix."""
    now, steps = time.perf_counter(), run.step - tally.since_step
    record = {
        "step": run.step,
        "loss": tally.loss_sum.item() / steps,
        "active_dims": n_dims,
        "points": n_points,
        "steps_per_s": steps / (now - tally.since_time),
    }
    if run.train_step.skip_nonfinite:
        record["skipped"] = run.train_step.skipped
    with open(run.log_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if run.tracker:
        run.tracker.log(record)
    bar.set_postfix(loss=f"{record['loss']:.4f}", dims=n_dims, points=n_points)
    tally.since_time = now


def share_cores(n_jobs: int | None) -> None:
    """Under a launcher that runs `n_jobs` jobs side by side (hydra/launcher=joblib), give each
    job's torch its share of the cores, so that the jobs do not oversubscribe them."""
    if n_jobs is None:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_jobs = cores if n_jobs < 1 else n_jobs  # joblib's -1: a job per core
    torch.set_num_threads(max(1, cores // n_jobs))


@hydra.main(version_base=None, config_path=str(CONF), config_name="train")
def main(cfg: DictConfig) -> None:
    share_cores(HydraConfig.get().launcher.get("n_jobs"))
    try:
        train(cfg, HydraConfig.get().runtime.output_dir)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    from minicl.train import main as importable  # joblib's workers unpickle the job by its module's name

    importable()
