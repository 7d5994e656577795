"""Hydra schemas (structured configs) and the semantic checks that run before any work starts.

Each config object is declared once, as a dataclass: the model's fields are ModelConfig's
(minicl.model), the task's are those of the registered task classes (minicl.tasks), the rest are
declared here. Hydra's schemas are derived from them, with every `Literal` field turned into an
Enum, so that a misspelt key, a wrong type or a value outside the allowed ones fails when the
config composes, naming the value. `check_config` then catches values that are well-typed but
inconsistent (sparsity above dims, more points than positions, ...).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from minicl.common import bf16_is_fast
from minicl.model import ModelConfig
from minicl.tasks import TASKS, Task, build_task

# Hydra's configs: minicl/conf in an installed wheel, conf/ beside the package in a source checkout
CONF = next(
    path
    for path in (Path(__file__).resolve().parent / "conf", Path(__file__).resolve().parents[1] / "conf")
    if path.is_dir()
)


@dataclass
class ScheduleSchema:
    start: int = MISSING
    end: int = MISSING
    inc: int = 1
    interval: int = 2000


@dataclass
class CurriculumSchema:  # the paper's curriculum for the linear classes
    dims: ScheduleSchema = field(default_factory=lambda: ScheduleSchema(5, 20, 1, 2000))
    points: ScheduleSchema = field(default_factory=lambda: ScheduleSchema(11, 41, 2, 2000))


@dataclass
class TrainerSchema:
    steps: int = 500_000
    batch_size: int = 64
    lr: float = 1e-4
    schedule: Literal["constant", "cosine", "wsd"] = "constant"  # constant (the paper's) | cosine: decays to 0
    # at trainer.steps | wsd: constant, then a linear decay to 0 over the last trainer.decay_steps
    warmup_steps: int = 0  # linear warm-up from 0 to lr over this many steps
    decay_steps: int = 0  # wsd: the steps of the final decay
    seed: int = 0
    init: Optional[str] = None  # start from these weights (a run directory, a checkpoint or
    # pretrained:<name>, of the same model config) instead of fresh ones; the optimiser starts afresh
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: Optional[bool] = None  # None: on for CUDA, off on CPU
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"] = "default"
    amp: Optional[bool] = False  # bf16 autocast. false: fp32 (TF32 matmuls on CUDA), the paper's precision;
    # true: bf16 (faster, measured less accurate: README); null: bf16 where fast (CUDA, CPUs with native bf16)
    curriculum: bool = True
    # all: the loss of every prediction in the prompt (the paper's); last: only of the prediction after
    # the whole prompt (von Oswald et al.'s, experiment=lsa_gd); queries: as ICLRegressor predicts, each
    # step a context of min_context..curriculum points rows (uniform), standardised on it
    # (minicl.tasks.standardize), and trainer.queries rows more, each predicted from the context alone
    loss_on: Literal["all", "last", "queries"] = "all"
    queries: int = 16
    min_context: int = 1
    checkpoint_every: int = 1000
    snapshot_every: int = 100_000  # permanent model_<step>.pt; 0 turns them off
    log_every: int = 100
    grad_clip: Optional[float] = None
    on_nonfinite: Literal["stop", "skip"] = (
        "stop"  # stop: raise, keeping the last good checkpoint; skip: drop the update
    )
    eval_prompts: int = 1280  # prompts for the end-of-run figure
    evaluate_at_end: bool = False  # run the full evaluation suite after training
    progress: bool = True


@dataclass
class LoggerSchema:
    name: Literal["none", "tensorboard", "wandb"] = "none"  # metrics.jsonl is written in every case
    project: str = "minicl"  # wandb
    entity: Optional[str] = None  # wandb
    mode: Literal["online", "offline"] = "online"  # wandb


def module_class(cls: type) -> type:
    """A class made at run time, as a class of this module: pickle finds it by name, as Hydra's
    joblib and submitit launchers need (every one is made when the module loads)."""
    cls.__module__, cls.__qualname__ = __name__, cls.__name__
    globals()[cls.__name__] = cls
    return cls


@dataclass
class TaskSchema:
    """What every task's config holds beside the fields of its class (task_schema)."""

    name: str = MISSING
    n_dims: int = 20  # the paper's d
    num_tasks: Optional[int] = None  # finite pool of functions
    num_training_examples: Optional[int] = None  # finite pool of prompts
    curriculum: CurriculumSchema = field(default_factory=CurriculumSchema)


def task_schema(name: str) -> type:
    """The schema of task `name`'s config: TaskSchema's fields, `name` fixed to it, and the fields
    of its class (minicl.tasks.TASKS) with their defaults, made once. Each task's config holds its
    own fields and nothing else, so two tasks may give a field of one name different defaults."""
    schema_name = f"TaskSchema_{name}"
    if schema_name not in globals():
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
        own = [(f.name, f.type, f.default) for f in dataclasses.fields(TASKS[name]) if f.name != "n_dims"]
        spec = [("name", Literal[name], name), *own]
        module_class(dataclasses.make_dataclass(schema_name, spec, bases=(TaskSchema,)))
    return globals()[schema_name]


ModelSchema = module_class(
    dataclasses.make_dataclass(
        "ModelSchema",
        [  # ModelConfig's fields but n_dims (the task's)
            ("name", str, MISSING),
            *((f.name, f.type, f.default) for f in dataclasses.fields(ModelConfig) if f.name != "n_dims"),
        ],
    )
)


@dataclass
class TrainSchema:
    task: Any = MISSING  # a task's schema (task_schema), from the task group's defaults list
    model: ModelSchema = MISSING  # type: ignore[valid-type]  # a class made at run time
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)


@dataclass
class EvaluateSchema:
    task: Any = MISSING  # as TrainSchema.task
    baselines: dict[str, Any] = field(default_factory=dict)  # {label: {name: registered baseline, **params}}
    run: Optional[str] = None  # a run directory; its task replaces `task`
    on_task: bool = False  # with run: prompts of `task` (as composed here) instead of the run's own
    n_prompts: int = 1280
    seed: int = 0
    device: str = "auto"
    settings: Optional[list[str]] = None  # null: the task's default settings
    batch_size: int = 256
    bootstrap: int = 1000


@dataclass
class ExploreSchema:
    run: str = MISSING  # a run directory
    sweep: str = "x_scale"  # x_scale | w_scale | noise | skew | length | dims | probe | algorithms
    k: Optional[int] = None  # in-context examples the sweep plot reads; null: 2 * n_dims (sweep=algorithms: n_dims)
    grid: Optional[list[float]] = None  # the swept values; null: the sweep's defaults
    max_points: Optional[int] = None  # length sweep: the longest prompt; null: the positions allow
    n_prompts: int = 1280
    seed: int = 0
    device: str = "auto"
    baselines: Optional[dict[str, Any]] = None  # null: the run's task's baseline set
    settings: Optional[list[str]] = None  # sweep=algorithms: the settings probed; null: standard and skewed


@dataclass
class ReproduceSchema:
    claims: list[str] = field(default_factory=lambda: ["linear", "sparse_linear", "relu_2nn", "decision_tree"])
    scale: Literal["cpu", "paper"] = (
        "cpu"  # cpu: experiment=claim_<task>; paper: the task's defaults (standard model, 500k steps)
    )
    out: str = "runs/claims"  # runs go to OUT/<scale>/<claim>/seed<N>, the table and figures to OUT/<scale>/
    n_prompts: int = 1280
    device: str = "auto"
    overrides: list[str] = field(default_factory=list)  # training overrides for every claim run
    source: Literal["train", "pretrained"] = "train"  # pretrained: judge the shipped claim models, training nothing
    seeds: Any = field(default_factory=lambda: [0])  # training seeds: a list, or N for 0..N-1
    jobs: int = 1  # runs trained side by side, each on cores / jobs threads


class Choice(str, Enum):
    """A string that must be one of its Enum's values; prints as the plain string."""

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]  # str's, not Enum's


def for_hydra(tp, name: str):
    """The type as OmegaConf checks it: Literal[...] -> a Choice Enum called `name`, dataclasses ->
    their structured() class, Optional[...] of either likewise."""
    if get_origin(tp) is Literal:
        return module_class(Choice(name, {value: value for value in get_args(tp)}))  # type: ignore[call-overload]
    if get_origin(tp) is Union:  # Optional[...]
        return Optional[for_hydra(next(a for a in get_args(tp) if a is not type(None)), name)]
    return structured(tp) if isinstance(tp, type) and dataclasses.is_dataclass(tp) else tp


def structured(cls: type) -> type:
    """`cls` with every field's type for_hydra's: StructuredTaskSchema for TaskSchema, built once."""
    name = f"Structured{cls.__name__}"
    if name not in globals():
        specs = []
        for f in dataclasses.fields(cls):
            default: Any = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = field(default_factory=partial(made, f.default_factory))
            specs.append((f.name, for_hydra(f.type, f"{name}_{f.name}"), default))
        module_class(dataclasses.make_dataclass(name, specs))
    return globals()[name]


def made(make: Callable[[], Any]) -> Any:
    """A default_factory's value as its structured() class."""
    return converted(make())


def converted(value):
    """A dataclass instance as an instance of its structured() class, recursively; other values as they are."""
    if not dataclasses.is_dataclass(value):
        return value
    return structured(type(value))(**{f.name: converted(getattr(value, f.name)) for f in dataclasses.fields(value)})


SCHEMAS = {
    name: structured(schema)
    for name, schema in (  # made as the module loads, for pickle
        ("train", TrainSchema),
        ("evaluate", EvaluateSchema),
        ("explore", ExploreSchema),
        ("reproduce", ReproduceSchema),
    )
}
for _name in TASKS:  # made as the module loads, for pickle
    structured(task_schema(_name))


def register_schemas() -> None:
    """Store the commands' schemas, and each registered task's as task/<name>_schema (the
    defaults list of conf/task/<name>.yaml names it)."""
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)
    for name in TASKS:
        cs.store(group="task", name=f"{name}_schema", node=structured(task_schema(name)))


def plain(node) -> Any:
    """A composed config (or part of one) as plain dicts, lists and strings, interpolations resolved."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True) if isinstance(node, DictConfig) else node


def model_config(cfg: DictConfig | dict) -> ModelConfig:
    """The model's own config from a run config (the model reads x of width task.n_dims)."""
    model = plain(cfg["model"])
    return ModelConfig(
        n_dims=cfg["task"]["n_dims"],
        **{f.name: model[f.name] for f in dataclasses.fields(ModelConfig) if f.name != "n_dims"},
    )


def task_from_config(task_cfg: DictConfig | dict) -> Task:
    params = dict(plain(task_cfg))
    params.pop("curriculum", None)
    return build_task(params.pop("name"), **params)


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the first inconsistent value; run before any work starts."""
    if cfg.task.n_dims <= 0:
        raise ValueError(f"task.n_dims must be positive, got {cfg.task.n_dims}")
    check_curriculum(cfg.task, cfg.trainer.curriculum, model_config(cfg).max_points, cfg.trainer.loss_on == "queries")
    check_trainer(cfg.trainer)
    if cfg.model.mask == "prefix" and cfg.trainer.loss_on == "all":
        raise ValueError(
            "model.mask=prefix reads each prefix in a pass of its own: train it with trainer.loss_on=last "
            "(one pass per prompt) or queries, not all"
        )


def check_curriculum(t: DictConfig, enabled: bool, max_points: int | None, queries: bool = False) -> None:
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
    task_from_config(t).check_active_dims(dims.start if enabled else dims.end)
    if max_points is not None and points.end + queries > max_points:
        room = " less the queries' position" * queries
        raise ValueError(f"task.curriculum.points.end={points.end} is above model.n_positions={max_points}{room}")


def check_trainer(tr: DictConfig) -> None:
    for name in (
        "steps",
        "batch_size",
        "checkpoint_every",
        "log_every",
        "eval_prompts",
        "snapshot_every",
        "queries",
        "min_context",
    ):
        value, least = tr[name], 0 if name in ("steps", "snapshot_every") else 1
        if value < least:
            raise ValueError(f"trainer.{name} must be >= {least}, got {value}")
    if tr.lr <= 0:
        raise ValueError(f"trainer.lr must be positive, got {tr.lr}")
    if tr.warmup_steps < 0:
        raise ValueError(f"trainer.warmup_steps must be >= 0, got {tr.warmup_steps}")
    if tr.schedule == "wsd" and tr.decay_steps < 1:
        raise ValueError(f"trainer.schedule=wsd needs trainer.decay_steps >= 1, got {tr.decay_steps}")
    if tr.grad_clip is not None and tr.grad_clip <= 0:
        raise ValueError(f"trainer.grad_clip must be positive or null, got {tr.grad_clip}")
    if tr.loss_on == "queries" and tr.evaluate_at_end:
        raise ValueError(
            "trainer.evaluate_at_end reads prompts position by position; a trainer.loss_on=queries run "
            "is evaluated as ICLRegressor reads a table (its final_eval.json)"
        )
    devices = ("auto", "cpu", "cuda")
    if tr.device.split(":")[0] not in devices:
        raise ValueError(f"trainer.device={tr.device!r} is not one of {devices} (or cuda:N)")


# ---------------------------------------------------------------- a run's saved config

# Settings that may change between a run and its resume without changing its results.
RESUMABLE_CHANGES = {
    "steps",
    "checkpoint_every",
    "snapshot_every",
    "log_every",
    "eval_prompts",
    "evaluate_at_end",
    "progress",
    "on_nonfinite",
    "device",
}


def resolved_config(cfg: DictConfig, device: torch.device) -> DictConfig:
    """The run's config as training uses it and checkpoints save it: plain values, interpolations
    resolved, trainer.amp and trainer.compile set to what this device runs."""
    resolved = plain(cfg)
    trainer = resolved["trainer"]
    trainer["amp"] = bf16_is_fast(device) if trainer["amp"] is None else trainer["amp"]
    trainer["compile"] = device.type == "cuda" if trainer["compile"] is None else trainer["compile"]
    return OmegaConf.create(resolved)


def schema_defaults(task_name: str) -> dict:
    """Every section's keys at their defaults (the task's: task `task_name`'s)."""
    sections = {"task": task_schema(task_name), "model": ModelSchema, "trainer": TrainerSchema, "logger": LoggerSchema}
    return {name: plain(OmegaConf.structured(structured(schema))) for name, schema in sections.items()}


def migrated(config: dict) -> dict:
    """A saved run config read as today's: the keys added since it was saved at their defaults (a new
    option's default is what runs did before it existed), and task keys that are not its task's
    dropped (before each task had a schema of its own, every task's config held every task's fields)."""
    defaults = schema_defaults(config["task"]["name"])
    out = {
        section: defaults.get(section, {}) | value if isinstance(value, dict) else value
        for section, value in config.items()
    }
    out["task"] = {key: value for key, value in out["task"].items() if key in defaults["task"]}
    return out


def config_differences(saved: dict, current: dict) -> list[str]:
    """Keys whose values differ between two resolved configs, ignoring the resumable trainer knobs
    (trainer.steps too, unless a decaying schedule depends on it) and the logger."""
    decays = current.get("trainer", {}).get("schedule", "constant") != "constant"
    resumable = RESUMABLE_CHANGES - ({"steps"} if decays else set())
    saved, diffs = migrated(saved), []
    for section in sorted((saved.keys() | current.keys()) - {"logger"}):  # tracking does not change results
        a, b = saved.get(section, {}), current.get(section, {})
        if not isinstance(a, dict) or not isinstance(b, dict):
            diffs += [f"{section}: {a!r} -> {b!r}"] if a != b else []
            continue
        diffs += [
            f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}"
            for key in sorted(a.keys() | b.keys())
            if not (section == "trainer" and key in resumable) and a.get(key) != b.get(key)
        ]
    return diffs


def check_resumable(saved: dict, cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume run_dir's checkpoint (its config `saved`) with a config that changes its results."""
    diffs = config_differences(saved, plain(cfg))
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different config; refusing to resume: " + "; ".join(diffs))
