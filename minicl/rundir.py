"""A run's files, in one place: a minicl run directory (its checkpoints, written atomically and
read back with a clear error, its log metrics.jsonl, its provenance), the models shipped in the
package (`pretrained:<name>`), and the original code's run directories (read as minicl runs).
Training restores a run from them; every command that takes `run=` reads one with `read_run`.

Imports torch only (PyYAML, which Hydra brings, is loaded when an original config is read), so
`import minicl` stays light; what a saved config means (which changes a resume accepts, how older
configs read today) is minicl.config's.
"""

import errno
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from minicl.common import save_atomic, write_json
from minicl.model import ModelConfig, PromptModel, build_model
from minicl.tasks import TASKS, PromptSampler

STATE = "state.pt"  # a run's latest checkpoint
PREVIOUS = "state.prev.pt"  # the checkpoint before the latest
LOG = "metrics.jsonl"
PROVENANCE = "provenance.json"  # what started the run: command, commit, machine
SHIPPED = Path(__file__).resolve().parent / "shipped"  # the trained models that come with the package
PRETRAINED = "pretrained:"  # `run=pretrained:<name>` names a shipped model


class CheckpointError(RuntimeError):
    """A checkpoint or run directory that is missing, cut short or not what it claims to be."""


# ---------------------------------------------------------------- shipped models


def shipped_names() -> list[str]:
    return sorted(path.stem for path in SHIPPED.glob("*.pt"))


def shipped_path(run: str | os.PathLike) -> Path | None:
    """The file of a shipped model named `pretrained:<name>`, None for any other path."""
    if not str(run).startswith(PRETRAINED):
        return None
    name = str(run).removeprefix(PRETRAINED)
    path = SHIPPED / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {shipped_names()}")
    return path


def shipped_info(name: str) -> dict:
    """What a shipped model records: its config, the command, commit and machine that trained it,
    its errors on the standard setting with their bands (minicl.pretrained)."""
    path = shipped_path(PRETRAINED + name)
    assert path is not None  # a pretrained:<name>
    return json.loads(path.with_suffix(".json").read_text())


def output_dir(run: str | os.PathLike) -> Path:
    """Where the commands write what they find about a run: its own directory, or for a shipped
    model (inside the installed package) runs/pretrained/<name> below the working directory."""
    if shipped_path(run) is not None:
        return Path("runs") / "pretrained" / str(run).removeprefix(PRETRAINED)
    return Path(run)


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(state: dict, run_dir: Path) -> None:
    """Save `state` as run_dir/state.pt, keeping the previous one as state.prev.pt."""
    run_dir = Path(run_dir)
    current = run_dir / STATE
    tmp = run_dir / (STATE + ".new")
    save_atomic(state, tmp)
    if current.exists():
        os.replace(current, run_dir / PREVIOUS)
    os.replace(tmp, current)


def read_checkpoint(path: Path) -> dict:
    """Load one checkpoint file, or raise CheckpointError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle error, foreign file, ...
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not {"model", "model_config", "config"} <= state.keys():
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a minicl checkpoint: found {found}")
    return state


def latest_checkpoint(run_dir: Path) -> dict | None:
    """The newest readable checkpoint of a run, or None if it has none. A checkpoint cut short
    (a crash, a full disk) is reported and the newest intact one is used instead."""
    run_dir = Path(run_dir)
    found, errors = [], []
    for name in (STATE, STATE + ".new", PREVIOUS):  # .new: a kill between save_checkpoint's renames
        path = run_dir / name
        if path.exists():
            try:
                found.append((read_checkpoint(path), name))
            except CheckpointError as e:
                errors.append(str(e))
    if not found:
        if errors:
            raise CheckpointError("no intact checkpoint: " + "; ".join(errors))
        return None
    state, name = max(found, key=lambda f: f[0]["step"])
    for error in errors:
        warnings.warn(f"{error}; using {name} (step {state['step']}) instead", stacklevel=2)
    return state


def read_run(path: str | os.PathLike) -> dict:
    """The checkpoint (model, model_config, config, step) of a minicl run directory, of an original
    run directory of the paper's code (config.yaml + state.pt or model_<step>.pt), of a file, or of
    a shipped model (`pretrained:<name>`)."""
    path = shipped_path(path) or Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run directory or checkpoint at {path}")
    if path.is_file():
        return read_checkpoint(path)
    if (path / "config.yaml").is_file():  # minicl keeps its config in .hydra/ and state.pt
        return read_original_run(path)
    state = latest_checkpoint(path)
    if state is None:
        found = sorted(p.name for p in path.iterdir())[:10]
        raise CheckpointError(
            f"{path} holds neither a minicl checkpoint ({STATE}) nor an original run (config.yaml); found {found}"
        )
    return state


def read_prompt_run(path: str | os.PathLike) -> dict:
    """read_run for the commands that read prompts position by position (evaluate, explore and its
    probe and algorithms sweeps): a run trained as ICLRegressor reads a table (trainer.loss_on=queries) is refused."""
    state = read_run(path)
    if (state.get("config") or {}).get("trainer", {}).get("loss_on") == "queries":
        raise ValueError(
            f"{path} was trained as ICLRegressor reads a table (trainer.loss_on=queries: a standardised "
            "context, then queries), not on prompts read position by position; its errors are in its "
            "final_eval.json, and `python examples/real_data.py --model RUN` scores it on real tables"
        )
    return state


def model_from_state(state: dict) -> PromptModel:
    """The model a checkpoint (as read_run returns it) holds, in eval mode."""
    model = build_model(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    model.trained_on = (state.get("config") or {}).get("task", {}).get("name")
    return model.eval()


def load_model(path: str | os.PathLike) -> PromptModel:
    """The trained model of a run directory (minicl's or the original code's), of a checkpoint
    file, or shipped with minicl (`pretrained:<name>`, minicl.pretrained.names()), in eval mode on CPU."""
    return model_from_state(read_run(path))


# ---------------------------------------------------------------- the original code's run directories


# the original's task names -> minicl's, and its task_kwargs -> minicl's task fields
TASK_NAMES = {
    "linear_regression": "linear",
    "sparse_linear_regression": "sparse_linear",
    "linear_classification": "linear_classification",
    "noisy_linear_regression": "noisy_linear",
    "quadratic_regression": "quadratic",
    "relu_2nn_regression": "relu_2nn",
    "decision_tree": "decision_tree",
}
TASK_KWARGS = {
    "sparsity": "sparsity",
    "noise_std": "noise_std",
    "hidden_layer_size": "hidden",
    "depth": "depth",
    "scale": "w_scale",
}
CONV1D = re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")


def convert_state_dict(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original TransformerModel state dict -> minicl Transformer state dict (wte dropped)."""
    out = {}
    for key, value in original.items():
        if key.startswith("_read_in.") or key.startswith("_read_out."):
            out[key[1:]] = value
        elif key.startswith("_backbone."):
            name = key.removeprefix("_backbone.")
            if name == "wte.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # unused word embedding; old HF versions' causal-mask buffers
            out[name] = value.t().contiguous() if CONV1D.fullmatch(name) else value
    return out


def _curriculum(section: dict, default_start: int, default_end: int) -> dict:
    section = section or {}
    return {
        "start": int(section.get("start", default_start)),
        "end": int(section.get("end", default_end)),
        "inc": int(section.get("inc", 0)),
        "interval": int(section.get("interval", 1)),
    }


def original_config(raw: dict) -> tuple[ModelConfig, dict]:
    """(ModelConfig, minicl run config) from an original config.yaml."""
    m, training = raw.get("model", {}), raw.get("training", {})
    model_config = ModelConfig(
        n_dims=int(m["n_dims"]),
        n_positions=int(m["n_positions"]),
        n_embd=int(m["n_embd"]),
        n_layer=int(m["n_layer"]),
        n_head=int(m["n_head"]),
    )
    task_name = training.get("task", "linear_regression")
    if task_name not in TASK_NAMES:
        raise ValueError(f"original task {task_name!r} has no minicl counterpart; known: {sorted(TASK_NAMES)}")
    cur = training.get("curriculum", {})
    name = TASK_NAMES[task_name]
    own = {f.name: f.default for f in fields(TASKS[name]) if f.name != "n_dims"}  # the original's defaults too
    kwargs = {TASK_KWARGS[k]: v for k, v in (training.get("task_kwargs") or {}).items() if TASK_KWARGS.get(k) in own}
    task = {
        "name": name,
        "n_dims": model_config.n_dims,
        **own,
        **kwargs,
        "num_tasks": training.get("num_tasks"),
        "num_training_examples": training.get("num_training_examples"),
        "curriculum": {
            "dims": _curriculum(cur.get("dims"), model_config.n_dims, model_config.n_dims),
            "points": _curriculum(cur.get("points"), model_config.n_positions, model_config.n_positions),
        },
    }
    model = {"name": m.get("family", "gpt2"), **{k: v for k, v in asdict(model_config).items() if k != "n_dims"}}
    trainer = {
        "seed": 0,
        "steps": int(training.get("train_steps", 0)),
        "batch_size": int(training.get("batch_size", 64)),
        "lr": float(training.get("learning_rate", 1e-4)),
    }
    return model_config, {"task": task, "model": model, "trainer": trainer, "source": "original"}


def read_original_run(path: Path) -> dict:
    """A minicl-style checkpoint dict (model, model_config, config, step) from an original run directory."""
    import yaml  # deferred: `import minicl` reaches this module and needs torch only

    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"{path} has no config.yaml, so it is not an original run directory")
    raw = yaml.safe_load((path / "config.yaml").read_text()) or {}
    if "model" not in raw or not {"n_dims", "n_positions", "n_embd", "n_layer", "n_head"} <= set(raw["model"]):
        raise CheckpointError(
            f"{path / 'config.yaml'} lacks model.n_dims/n_positions/n_embd/n_layer/n_head; found {sorted(raw)}"
        )
    snapshots = sorted(path.glob("model_*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    weights_file = path / "state.pt" if (path / "state.pt").is_file() else (snapshots[-1] if snapshots else None)
    if weights_file is None:
        raise CheckpointError(f"{path} has config.yaml but neither state.pt nor model_<step>.pt")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{weights_file} is unreadable ({type(e).__name__}: {e})") from e
    weights = state.get("model_state_dict", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or "_read_in.weight" not in weights:
        raise CheckpointError(f"{weights_file} holds no original TransformerModel weights (_read_in.weight missing)")
    model_config, config = original_config(raw)
    step = state.get("train_step", int(re.sub(r"\D", "", weights_file.stem) or 0)) if isinstance(state, dict) else 0
    return {"model": convert_state_dict(weights), "model_config": asdict(model_config), "config": config, "step": step}


# ---------------------------------------------------------------- training state, log and provenance


def checkpoint_state(model, opt, sampler: PromptSampler, step: int, config: dict, model_config: ModelConfig) -> dict:
    """Everything a resume needs: weights, optimiser, step, config (plain values) and every random stream."""
    device = next(model.parameters()).device
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "config": config,
        "model_config": asdict(model_config),
        "rng": {
            "sampler": sampler.state_dict(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
    }


def restore(state: dict, model, opt, sampler: PromptSampler) -> int:
    """Load a checkpoint (checkpoint_state's) into the model, optimiser, sampler and torch's RNG;
    the step it reached."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["rng"]["sampler"])
    torch.set_rng_state(state["rng"]["torch"])
    device = next(model.parameters()).device
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return state["step"]


def write(save: Callable[[], None], run_dir: Path, step: int, what: str) -> None:
    """Call `save`, naming the step and the run directory if the disk refuses it."""
    try:
        save()
    except OSError as e:
        raise OSError(
            e.errno,
            f"could not write the {what} of step {step} in {run_dir} ({e.strerror}); "
            "the checkpoints already there are intact",
        ) from e


def save(state: dict, run_dir: Path) -> None:
    write(lambda: save_checkpoint(state, run_dir), run_dir, state["step"], "checkpoint")


def check_writable(run_dir: Path, needed_bytes: int) -> None:
    """Fail at start, not at the first checkpoint, when the run directory cannot hold checkpoints."""
    probe = run_dir / ".minicl_write_probe"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"cannot write to the run directory {run_dir}: {e.strerror}") from e
    free = shutil.disk_usage(run_dir).free
    if free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"{run_dir} has {free / 1e6:.1f} MB free; its checkpoints need about {needed_bytes / 1e6:.1f} MB",
        )


def read_log(run_dir: Path) -> list[dict]:
    """The records of metrics.jsonl, skipping a line cut short by a kill."""
    path = Path(run_dir) / LOG
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(run_dir: Path, last_step: int) -> None:
    """Drop log lines written after `last_step` (by a run that died before its next checkpoint)."""
    path = Path(run_dir) / LOG
    if path.exists():
        path.write_text(
            "".join(json.dumps(r) + "\n" for r in read_log(run_dir) if r.get("step", last_step + 1) <= last_step)
        )


def training_seconds(run_dir: Path) -> float:
    """Time spent in the step loop, summed from metrics.jsonl (so also for a reused run)."""
    seconds, last = 0.0, 0
    for record in read_log(run_dir):
        seconds += (record["step"] - last) / record["steps_per_s"]
        last = record["step"]
    return seconds


RESULT_SOURCES = ("minicl", "conf", "examples", "docs/render.py")  # what writes a result, in the checkout


def git_commit(root: Path | None = None) -> str | None:
    """The commit of minicl's source checkout (or of `root`), marked -dirty when anything that writes a
    result has uncommitted changes (RESULT_SOURCES; docs and results themselves do not count); None
    when installed."""
    root = Path(__file__).parent.parent if root is None else root

    def git(*args):
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *RESULT_SOURCES)
    return commit and commit + ("-dirty" if changed else "")


def machine() -> dict:
    """The CPU and its kernels (results differ between AVX2 and AVX-512 kernels), torch's version, CUDA's card."""
    info = Path("/proc/cpuinfo")
    lines = (line.split(":", 1) for line in (info.read_text() if info.exists() else "").splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in lines}
    return {
        "cpu": fields.get("model name", platform.machine()),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": "avx512_bf16" in fields.get("flags", "").split(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


@dataclass(frozen=True)
class Provenance:
    """What started a run (run_dir/provenance.json): the command, minicl's commit, the machine
    (machine()) and when."""

    command: str | None
    commit: str | None
    machine: dict
    started: str

    def where(self) -> str:
        """The machine in words: where the run's numbers came from."""
        m = self.machine
        bf16 = ", AVX512-BF16" * m["avx512_bf16"]
        return f"{m['cuda'] or m['cpu']}, {m['kernels']} kernels{bf16}, torch {m['torch']}"


def stamp(command: str | None, kind: str) -> dict:
    """What a results JSON is (`kind`, which docs/render.py reads it by) and where it came from: the
    command that wrote it, minicl's commit, the machine."""
    return {"kind": kind, "command": command, "commit": git_commit(), "machine": machine()}


def command_line(module: str) -> str:
    """This process's command line as `python -m module ...`, each argument quoted for a POSIX shell."""
    return " ".join([f"python -m {module}", *map(shlex.quote, sys.argv[1:])])


def write_provenance(run_dir: Path) -> None:
    """run_dir/provenance.json, once, when a run starts."""
    command = "python -m minicl.train " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("train.py") else None
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(Path(run_dir) / PROVENANCE, asdict(Provenance(command, git_commit(), machine(), started)))


def read_provenance(run_dir: Path) -> Provenance | None:
    path = Path(run_dir) / PROVENANCE
    return Provenance(**json.loads(path.read_text())) if path.exists() else None
