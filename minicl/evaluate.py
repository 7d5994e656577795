"""Evaluation: `python -m minicl.evaluate run=RUN_DIR` (or `task=NAME` for the baselines alone).

Every predictor, the trained model (labelled by its arch: transformer, lstm, ...) and each
baseline, is called the same way, `predict(xs, ys, queries)`, on the same seeded prompts of each
setting. Writes metrics.json (per setting, model and number of in-context examples k: mean, std
and 5-95% bootstrap band of the normalised error) and plots/<setting>.png, and prints a compact
table.
"""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from minicl.baselines import DMMSE, NOISELESS_STD, Ridge, build_baseline
from minicl.checkpoint import model_from_state, read_run
from minicl.common import pointwise_metric, predict_in_batches, pyplot, resolve_device
from minicl.config import register_schemas, task_from_config
from minicl.model import MODELS
from minicl.tasks import Linear, PromptSampler, build_task, make_generators, sample_xs

CONF = Path(__file__).resolve().parents[1] / "conf"
LINEAR_TASKS = ("linear", "sparse_linear", "noisy_linear", "quadratic", "linear_classification")
NOISY_TASKS = ("linear", "sparse_linear", "noisy_linear")  # those with a noisy_linear setting
SHIFTS = ["random_quadrants", "orthogonal_train_test", "overlapping_train_test", "half_subspace", "skewed"]
SCALES = ["0.333", "0.5", "2", "3"]


def default_settings(task_name: str, pooled: bool = False) -> list[str]:
    """The paper's settings for a task: every shift for the linear classes, standard for the others;
    a run trained on a finite pool of tasks also gets pool_tasks (standard's tasks are fresh)."""
    first = ["standard", "pool_tasks"] if pooled else ["standard"]
    if task_name in LINEAR_TASKS:
        noisy = ["noisy_linear"] if task_name in NOISY_TASKS else []
        scales = [f"scale_{axis}_{s}" for axis in ("x", "y") for s in SCALES]
        return [*first, *SHIFTS, *scales, *noisy]
    if task_name == "relu_2nn":
        return [*first, "linear"]
    return first


# ---------------------------------------------------------------- settings


@dataclass
class Prompts:
    xs: torch.Tensor  # (B, N, D) in-context inputs
    ys: torch.Tensor  # (B, N) their labels
    queries: torch.Tensor | None  # (B, N, D) the query for each position, None: xs itself
    targets: torch.Tensor  # (B, N) the label of each query
    task: Any  # the function class the prompts were drawn from


def random_rotation(d: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, device=gen.device))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix


def covariance_transform(eigenvalues: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """S = U diag(lam) U^T for a random rotation U, scaled so that E||z S||^2 = ||S||_F^2 = d."""
    d = eigenvalues.numel()
    u = random_rotation(d, gen)
    s = u @ torch.diag(eigenvalues.to(u)) @ u.T
    return s * math.sqrt(d) / torch.linalg.matrix_norm(s)


def orthogonal_queries(xs: torch.Tensor) -> torch.Tensor:
    """Query i: the part of x_i orthogonal to x_0..x_{i-1}, rescaled to the norm of x_i (needs N <= D)."""
    q, r = torch.linalg.qr(xs.transpose(1, 2))  # columns of q: Gram-Schmidt of x_0, x_1, ...
    direction = (q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)).transpose(1, 2)
    return direction * xs.norm(dim=-1, keepdim=True)


def check_setting(setting: str) -> None:
    """Raise ValueError unless `setting` is one this module can build."""
    fixed = {"standard", "pool_tasks", "noisy_linear", "linear", *SHIFTS}
    for prefix in ("scale_x_", "scale_y_"):
        if setting.startswith(prefix):
            try:
                if float(setting.removeprefix(prefix)) > 0:
                    return
            except ValueError:
                pass
            raise ValueError(f"evaluation setting {setting!r} needs a positive factor, e.g. {prefix}2")
    if setting not in fixed:
        raise ValueError(f"unknown evaluation setting {setting!r}; known: {sorted(fixed)}, scale_x_<factor>, scale_y_<factor>")


def setting_prompts(setting: str, task, n_prompts: int, n_points: int, seed: int, device="cpu",
                    noise_std: float = 1.0, num_tasks: int | None = None, pool_seed: int = 0) -> Prompts:
    """Prompts of one evaluation setting (see default_settings); seeded by `seed` and the setting.
    `noise_std` is the label noise of the noisy_linear setting (the run's task.noise_std);
    pool_tasks draws functions from the pool of `num_tasks` a run with seed `pool_seed` trained on."""
    check_setting(setting)
    gens = make_generators(seed, device, "eval")
    d = task.n_dims
    if setting == "pool_tasks":
        if not num_tasks:
            raise ValueError("the pool_tasks setting needs a run trained on a finite pool of tasks (task.num_tasks)")
        xs, ys = PromptSampler(task, n_points, gens, num_tasks=num_tasks, pool_seed=pool_seed).sample(n_prompts)
        return Prompts(xs, ys, None, ys, task)
    if setting == "noisy_linear" and task.name not in NOISY_TASKS:
        raise ValueError(f"the noisy_linear setting needs one of the tasks {NOISY_TASKS}, not {task.name!r}")
    if setting == "linear":
        task = build_task("linear", n_dims=d)
    elif setting.startswith("scale_y_"):
        task = replace(task, w_scale=task.w_scale * float(setting.removeprefix("scale_y_")))
    elif setting == "orthogonal_train_test":
        n_points = min(n_points, d)
    params = task.sample(gens["functions"], n_prompts, d)
    transform = None
    if setting.startswith("scale_x_"):
        transform = float(setting.removeprefix("scale_x_")) * torch.eye(d, device=device)
    elif setting == "half_subspace":
        transform = covariance_transform((torch.arange(d) < d // 2).float(), gens["inputs"])
    elif setting == "skewed":
        transform = covariance_transform(1.0 / torch.arange(1, d + 1), gens["inputs"])
    xs = sample_xs(gens["inputs"], n_prompts, n_points, d, transform=transform)
    queries = None
    if setting == "random_quadrants":
        orthant = torch.sign(torch.randn(n_prompts, 1, d, generator=gens["inputs"], device=device))
        xs, queries = xs.abs() * orthant, sample_xs(gens["inputs"], n_prompts, n_points, d)
    elif setting == "orthogonal_train_test":
        queries = orthogonal_queries(xs)
    elif setting == "overlapping_train_test":
        earlier = (torch.rand(n_prompts, n_points, generator=gens["inputs"], device=device) * torch.arange(n_points, device=device)).long()
        queries = xs.gather(1, earlier.unsqueeze(-1).expand(-1, -1, d))  # query i = x_j, j < i (x_0 at i = 0)
    if setting == "noisy_linear":
        ys = noisy_labels(task, params, xs, noise_std, gens["noise"])
        return Prompts(xs, ys, None, ys, task)
    ys = task.apply(params, xs, gens["noise"])
    targets = ys if queries is None else task.apply(params, queries, gens["noise"])
    return Prompts(xs, ys, queries, targets, task)


def noisy_labels(task, params, xs: torch.Tensor, noise_std: float, gen: torch.Generator) -> torch.Tensor:
    """The original's noisy setting: the task's noiseless labels (sparse w stays sparse) plus
    N(0, noise_std^2), rescaled by sqrt(normaliser) / std(labels) over all prompts so that their
    variance is the signal's again (sqrt(d) / std for linear, as the original; sqrt(s) for sparse)."""
    ys = Linear.apply(task, params, xs)  # noisy_linear's own apply would add its noise a second time
    ys = ys + noise_std * torch.randn(ys.shape, generator=gen, device=gen.device)
    return ys * math.sqrt(task.normaliser) / ys.std()


# ---------------------------------------------------------------- metrics, table, plots


def summarise(errors: torch.Tensor, n_resamples: int, gen: torch.Generator) -> dict[str, list[float]]:
    """Per-k mean, std and 5-95% bootstrap band of the mean over prompts, for errors (B, N)."""
    B = errors.shape[0]
    errors = errors.double()
    idx = torch.randint(0, B, (n_resamples, B), generator=gen)
    counts = torch.zeros(n_resamples, B, dtype=errors.dtype).scatter_add_(1, idx, torch.ones_like(idx, dtype=errors.dtype))
    means = counts @ errors / B  # (R, N): the mean of each resample
    lo, hi = torch.quantile(means, torch.tensor([0.05, 0.95], dtype=means.dtype), dim=0)
    return {"mean": errors.mean(0).tolist(), "std": errors.std(0).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def table_ks(n_dims: int, n_points: int) -> list[int]:
    return sorted({min(k, n_points - 1) for k in (max(1, n_dims // 2), n_dims, 2 * n_dims)})


def format_table(metrics: dict) -> str:
    """Error at k = d/2, d, 2d for each setting and model."""
    ks = table_ks(metrics["n_dims"], metrics["n_points"])
    width = max(len(m) for s in metrics["settings"].values() for m in s["models"]) + 2
    lines = []
    for name, s in metrics["settings"].items():
        lines.append(f"{name} ({s['metric']})".ljust(width) + "".join(f"k={k}".rjust(10) for k in ks if k < len(s["trivial"])))
        for model, m in s["models"].items():
            lines.append(f"  {model}".ljust(width) + "".join(f"{m['mean'][k]:10.4f}" for k in ks if k < len(m["mean"])))
    return "\n".join(lines)


def plot_setting(name: str, s: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    draw_setting(ax, s, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_setting(ax, s: dict, title: str, models: list[str] | None = None) -> None:
    """Error (or accuracy) against k with bootstrap bands, one line per model (all by default),
    and the trivial predictor's level."""
    for model in models or list(s["models"]):
        m = s["models"][model]
        k = range(len(m["mean"]))
        (line,) = ax.plot(k, m["mean"], label=model, lw=2 if model in MODELS else 1.2)
        ax.fill_between(k, m["lo"], m["hi"], color=line.get_color(), alpha=0.2)
    ax.plot(range(len(s["trivial"])), s["trivial"], "k--", lw=1, label="trivial (predict 0)" if s["metric"] != "accuracy" else "chance")
    ax.set_xlabel("in-context examples")
    ax.set_ylabel("accuracy" if s["metric"] == "accuracy" else "squared error / normaliser")
    if s["metric"] != "accuracy":
        ax.set_ylim(0, 1.25 * max(s["trivial"]))
    ax.set_title(title)
    ax.legend(fontsize=7)


# ---------------------------------------------------------------- the suite


def load_baselines(baselines: dict) -> dict[str, Any]:
    """{display name: {name: registry name, **params}} -> {display name: callable}."""
    out = {}
    for label, spec in baselines.items():
        spec = dict(spec)
        if "name" not in spec:
            raise ValueError(f"baselines.{label} needs a 'name' (a registered baseline), got {spec}")
        out[label] = build_baseline(spec.pop("name"), **spec)
    return out


def default_baselines(task_cfg: DictConfig | dict) -> dict:
    """The baseline set conf/baseline/<task>.yaml lists, resolved against the task config."""
    path = CONF / "baseline" / f"{task_cfg['name']}.yaml"
    cfg = OmegaConf.create({"task": OmegaConf.create(task_cfg), "baselines": OmegaConf.load(path)})
    return OmegaConf.to_container(cfg, resolve=True)["baselines"]


def evaluate(
    task_cfg: dict,
    predictors: dict[str, Any],
    out_dir: str | Path,
    n_prompts: int = 1280,
    n_points: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    settings: list[str] | None = None,
    batch_size: int = 256,
    bootstrap: int = 1000,
    progress: bool = True,
    pool_seed: int | None = None,
) -> dict:
    """Evaluate every predictor on every setting; writes out_dir/metrics.json and out_dir/plots/.
    A task with a finite pool (task.num_tasks) draws it from `pool_seed` (default: `seed`)."""
    task = task_from_config(OmegaConf.create(task_cfg))
    n_points = n_points or task_cfg["curriculum"]["points"]["end"]
    num_tasks = task_cfg.get("num_tasks")
    pool_seed = seed if pool_seed is None else pool_seed
    settings = list(settings or default_settings(task.name, pooled=bool(num_tasks)))
    for setting in settings:
        check_setting(setting)
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    metrics = {"task": task.name, "n_dims": task.n_dims, "n_points": n_points, "n_prompts": n_prompts, "seed": seed, "settings": {}}
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(total=len(settings) * len(predictors), disable=not progress, desc="evaluate")
    for setting in settings:
        p = setting_prompts(setting, task, n_prompts, n_points, seed, device, task_cfg.get("noise_std", 1.0),
                            num_tasks, pool_seed)
        # predicting 0 does equally badly at every k: one number, repeated for the plot's dashed line
        trivial = pointwise_metric(p.task, torch.zeros_like(p.targets), p.targets, task.normaliser).mean().expand(p.targets.shape[1])
        entry = {
            "metric": "accuracy" if task.classification else "squared_error",
            "normaliser": task.normaliser, "trivial": [0.5] * p.targets.shape[1] if task.classification else trivial.tolist(),
            "models": {},
        }
        for label, predictor in predictors.items():
            bar.set_postfix_str(f"{setting}: {label}")
            preds = predict_in_batches(predictor, p.xs, p.ys, p.queries, batch_size)
            errors = pointwise_metric(p.task, preds, p.targets, task.normaliser).cpu()
            entry["models"][label] = summarise(errors, bootstrap, gen)
            bar.update(1)
        metrics["settings"][setting] = entry
        plot_setting(setting, entry, out_dir / "plots" / f"{setting}.png")
    bar.close()
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    tmp.replace(out_dir / "metrics.json")
    return metrics


def pool_baselines(task_cfg: dict, pool_seed: int) -> dict[str, Any]:
    """For a linear run trained on a finite pool of tasks: dmmse, Bayes-optimal for the pool, and
    ridge, Bayes-optimal for the Gaussian prior of fresh tasks, under the same label noise."""
    if not task_cfg.get("num_tasks") or task_cfg["name"] not in ("linear", "noisy_linear"):
        return {}
    task = task_from_config(OmegaConf.create(task_cfg))
    pool = PromptSampler(task, 1, make_generators(0), num_tasks=task_cfg["num_tasks"], pool_seed=pool_seed).function_pool["w"]
    noise_std = task.noise_std if task.name == "noisy_linear" else NOISELESS_STD
    return {"dmmse": DMMSE(pool, noise_std), "ridge": Ridge(lam=noise_std**2 / task.w_scale**2)}


def evaluate_run(run_dir: str | Path, baselines: dict | None = None, device: str = "auto",
                 baselines_task: str | None = None, **kwargs) -> dict:
    """Evaluate a trained run (its model and its task's baselines) into run_dir/metrics.json and plots/.
    `baselines` replace the task's set; given with `baselines_task`, only if that is the run's task."""
    run_dir = Path(run_dir)
    state = read_run(run_dir)
    task_cfg = state["config"]["task"]
    device = resolve_device(device)
    model = model_from_state(state).to(device)
    predictors = {model.config.arch: model}
    if baselines is None or baselines_task not in (None, task_cfg["name"]):
        baselines = default_baselines(task_cfg)
    predictors |= load_baselines(baselines)
    pool_seed = state["config"]["trainer"]["seed"]  # the pool a run trains on is drawn from its seed
    predictors |= pool_baselines(task_cfg, pool_seed)
    kwargs.setdefault("seed", pool_seed)
    metrics = evaluate(task_cfg, predictors, run_dir, device=device, pool_seed=pool_seed, **kwargs)
    print(format_table(metrics))
    return metrics


# ---------------------------------------------------------------- command line


register_schemas()


@hydra.main(version_base=None, config_path=str(CONF), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    options = dict(n_prompts=cfg.n_prompts, seed=cfg.seed, settings=cfg.settings, batch_size=cfg.batch_size, bootstrap=cfg.bootstrap)
    baselines = OmegaConf.to_container(cfg.baselines, resolve=True)
    if cfg.run is not None:  # the composed baselines are for cfg.task: used only if that is the run's task
        evaluate_run(cfg.run, baselines, device=cfg.device, baselines_task=cfg.task.name, **options)
        return
    metrics = evaluate(
        OmegaConf.to_container(cfg.task, resolve=True), load_baselines(baselines),
        HydraConfig.get().runtime.output_dir, device=resolve_device(cfg.device), **options,
    )
    print(format_table(metrics))


if __name__ == "__main__":
    main()
