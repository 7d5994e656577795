"""Hydra schemas (structured configs) and the semantic checks that run before any work starts.

The schemas catch misspelt keys and wrong types at composition; `check_config` catches values
that are well-typed but inconsistent (sparsity above dims, more points than positions, ...).
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from minicl.model import ModelConfig
from minicl.tasks import TASKS, build_task


@dataclass
class ScheduleSchema:
    start: int = MISSING
    end: int = MISSING
    inc: int = 1
    interval: int = 2000


@dataclass
class CurriculumSchema:
    dims: ScheduleSchema = field(default_factory=lambda: ScheduleSchema(5, 20, 1, 2000))
    points: ScheduleSchema = field(default_factory=lambda: ScheduleSchema(11, 41, 2, 2000))


@dataclass
class TaskSchema:
    name: str = MISSING
    n_dims: int = 20
    sparsity: int = 3  # sparse_linear
    noise_std: float = 1.0  # noisy_linear
    hidden: int = 100  # relu_2nn
    depth: int = 4  # decision_tree
    split_dims: str = "all"  # decision_tree: split coordinates over all dims (the original's) or the active ones
    w_scale: float = 1.0
    num_tasks: Optional[int] = None  # finite pool of functions
    num_training_examples: Optional[int] = None  # finite pool of prompts
    curriculum: CurriculumSchema = field(default_factory=CurriculumSchema)


@dataclass
class ModelSchema:
    name: str = MISSING
    n_positions: int = 101
    n_embd: int = 256
    n_layer: int = 12
    n_head: int = 8
    dropout: float = 0.0
    pos_emb: str = "learned"  # learned | rope | none (attention archs; the recurrent ones have no positions)
    arch: str = "transformer"  # transformer | linear_attention | lstm | mamba
    d_state: int = 16  # mamba
    d_conv: int = 4  # mamba
    expand: int = 2  # mamba


@dataclass
class TrainerSchema:
    steps: int = 500_000
    batch_size: int = 64
    lr: float = 1e-4
    schedule: str = "constant"  # constant (the paper's) | cosine: decays to 0 at trainer.steps |
    # wsd: constant, then a linear decay to 0 over the last trainer.decay_steps
    warmup_steps: int = 0  # linear warm-up from 0 to lr over this many steps
    decay_steps: int = 0  # wsd: the steps of the final decay
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: Optional[bool] = None  # None: on for CUDA, off on CPU
    compile_mode: str = "default"  # torch.compile mode: default | reduce-overhead | max-autotune-no-cudagraphs | max-autotune
    amp: Optional[bool] = False  # bf16 autocast. false: fp32 (TF32 matmuls on CUDA), the paper's precision;
    # true: bf16 (faster, measured less accurate: README); null: bf16 where fast (CUDA, CPUs with native bf16)
    curriculum: bool = True
    checkpoint_every: int = 1000
    snapshot_every: int = 100_000  # permanent model_<step>.pt; 0 turns them off
    log_every: int = 100
    grad_clip: Optional[float] = None
    on_nonfinite: str = "stop"  # stop: raise, keeping the last good checkpoint; skip: drop the update and count it
    eval_prompts: int = 1280  # prompts for the end-of-run figure
    evaluate_at_end: bool = False  # run the full evaluation suite after training
    progress: bool = True


@dataclass
class LoggerSchema:
    name: str = "none"  # none | tensorboard | wandb (metrics.jsonl is written in every case)
    project: str = "minicl"  # wandb
    entity: Optional[str] = None  # wandb
    mode: str = "online"  # wandb: online | offline


@dataclass
class TrainSchema:
    task: TaskSchema = MISSING
    model: ModelSchema = MISSING
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)


@dataclass
class EvaluateSchema:
    task: TaskSchema = MISSING
    baselines: dict[str, Any] = field(default_factory=dict)  # {label: {name: registered baseline, **params}}
    run: Optional[str] = None  # a run directory; its task replaces `task`
    n_prompts: int = 1280
    seed: int = 0
    device: str = "auto"
    settings: Optional[list[str]] = None  # null: the task's default settings
    batch_size: int = 256
    bootstrap: int = 1000


@dataclass
class ExploreSchema:
    run: str = MISSING  # a run directory
    sweep: str = "x_scale"  # x_scale | w_scale | noise | skew | length | dims | probe
    k: Optional[int] = None  # in-context examples the sweep plot reads; null: 2 * n_dims
    grid: Optional[list[float]] = None  # the swept values; null: the sweep's defaults
    max_points: Optional[int] = None  # length sweep: the longest prompt; null: the positions allow
    n_prompts: int = 1280
    seed: int = 0
    device: str = "auto"
    baselines: Optional[dict[str, Any]] = None  # null: the run's task's baseline set


@dataclass
class ReproduceSchema:
    claims: list[str] = field(default_factory=lambda: ["linear", "sparse_linear", "relu_2nn", "decision_tree"])
    scale: str = "cpu"  # cpu: experiment=claim_<task>; paper: the task's defaults (standard model, 500k steps)
    out: str = "runs/claims"  # runs go to OUT/<scale>/<claim>, the table and figures to OUT/<scale>/
    n_prompts: int = 1280
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)  # training overrides for every claim run


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    cs.store(name="evaluate_schema", node=EvaluateSchema)
    cs.store(name="explore_schema", node=ExploreSchema)
    cs.store(name="reproduce_schema", node=ReproduceSchema)
    cs.store(group="task", name="task_schema", node=TaskSchema)
    cs.store(group="model", name="model_schema", node=ModelSchema)
    cs.store(group="logger", name="logger_schema", node=LoggerSchema)


DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("constant", "cosine", "wsd")
LOGGERS, WANDB_MODES = ("none", "tensorboard", "wandb"), ("online", "offline")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def model_config(cfg: DictConfig) -> ModelConfig:
    """The model's own config from a composed run config (the model reads x of width task.n_dims)."""
    m = cfg.model
    return ModelConfig(
        n_dims=cfg.task.n_dims, n_positions=m.n_positions, n_embd=m.n_embd,
        n_layer=m.n_layer, n_head=m.n_head, dropout=m.dropout, pos_emb=m.pos_emb,
        arch=m.arch, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand,
    )


def task_from_config(task_cfg: DictConfig):
    params = OmegaConf.to_container(task_cfg, resolve=True)
    params.pop("curriculum", None)
    return build_task(params.pop("name"), **params)


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the first inconsistent value; run before any work starts."""
    t, tr = cfg.task, cfg.trainer
    if t.name not in TASKS:
        raise ValueError(f"unknown task.name={t.name!r}; known tasks: {sorted(TASKS)}")
    if t.n_dims <= 0:
        raise ValueError(f"task.n_dims must be positive, got {t.n_dims}")
    mc = model_config(cfg)
    task_from_config(t)
    for axis in ("dims", "points"):
        s = t.curriculum[axis]
        if not 0 < s.start <= s.end or s.inc < 0 or s.interval <= 0:
            raise ValueError(
                f"task.curriculum.{axis} needs 0 < start <= end, inc >= 0 and interval > 0, got "
                f"start={s.start} end={s.end} inc={s.inc} interval={s.interval}"
            )
    dims, points = t.curriculum.dims, t.curriculum.points
    if dims.end > t.n_dims:
        raise ValueError(f"task.curriculum.dims.end={dims.end} is above task.n_dims={t.n_dims}")
    if t.name == "sparse_linear" and t.sparsity > (dims.start if tr.curriculum else dims.end):
        raise ValueError(
            f"task.sparsity={t.sparsity} is above the {dims.start if tr.curriculum else dims.end} "
            "active dims the curriculum starts with"
        )
    if mc.max_points is not None and points.end > mc.max_points:
        raise ValueError(
            f"task.curriculum.points.end={points.end} is above model.n_positions={mc.n_positions}"
        )
    for name in ("steps", "batch_size", "checkpoint_every", "log_every", "eval_prompts", "snapshot_every"):
        value, least = tr[name], 0 if name in ("steps", "snapshot_every") else 1
        if value < least:
            raise ValueError(f"trainer.{name} must be >= {least}, got {value}")
    if tr.lr <= 0:
        raise ValueError(f"trainer.lr must be positive, got {tr.lr}")
    if tr.schedule not in SCHEDULES:
        raise ValueError(f"trainer.schedule must be one of {SCHEDULES}, got {tr.schedule!r}")
    if tr.warmup_steps < 0:
        raise ValueError(f"trainer.warmup_steps must be >= 0, got {tr.warmup_steps}")
    if tr.schedule == "wsd" and tr.decay_steps < 1:
        raise ValueError(f"trainer.schedule=wsd needs trainer.decay_steps >= 1, got {tr.decay_steps}")
    if tr.grad_clip is not None and tr.grad_clip <= 0:
        raise ValueError(f"trainer.grad_clip must be positive or null, got {tr.grad_clip}")
    if tr.compile_mode not in COMPILE_MODES:
        raise ValueError(f"trainer.compile_mode must be one of {COMPILE_MODES}, got {tr.compile_mode!r}")
    if tr.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"trainer.on_nonfinite must be 'stop' or 'skip', got {tr.on_nonfinite!r}")
    if tr.device.split(":")[0] not in DEVICES:
        raise ValueError(f"trainer.device={tr.device!r} is not one of {DEVICES} (or cuda:N)")
    lg = cfg.logger
    if lg.name not in LOGGERS:
        raise ValueError(f"logger={lg.name!r} is not one of {LOGGERS}")
    if lg.mode not in WANDB_MODES:
        raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {lg.mode!r}")
