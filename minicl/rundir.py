"""A training run's directory: what its checkpoints hold and how a run resumes from them, which
config changes a resume accepts, how configs saved by older versions read today, and its log
(metrics.jsonl). Training (train.py) and the commands built on runs (compare, reproduce) share it.
"""

import errno
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from minicl.checkpoint import latest_checkpoint, save_checkpoint
from minicl.common import bf16_is_fast, write_json
from minicl.config import LoggerSchema, ModelSchema, TaskSchema, TrainerSchema, plain, structured
from minicl.model import ModelConfig
from minicl.tasks import PromptSampler

LOG = "metrics.jsonl"
PROVENANCE = "provenance.json"  # what started the run: command, commit, machine

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


def schema_defaults() -> dict:
    """Every section's keys at their defaults."""
    sections = {"task": TaskSchema, "model": ModelSchema, "trainer": TrainerSchema, "logger": LoggerSchema}
    return {name: plain(OmegaConf.structured(structured(schema))) for name, schema in sections.items()}


def migrated(config: dict) -> dict:
    """A saved run config with the keys added since it was saved, at their defaults: a new option's
    default is what runs did before it existed."""
    defaults = schema_defaults()
    return {
        section: defaults.get(section, {}) | value if isinstance(value, dict) else value
        for section, value in config.items()
    }


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


def checkpoint_state(model, opt, sampler: PromptSampler, step: int, cfg: DictConfig, model_config: ModelConfig) -> dict:
    """Everything a resume needs: weights, optimiser, step, config and every random stream."""
    device = next(model.parameters()).device
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "config": plain(cfg),
        "model_config": asdict(model_config),
        "rng": {
            "sampler": sampler.state_dict(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
    }


def restore(run_dir: Path, cfg: DictConfig, model, opt, sampler: PromptSampler) -> int:
    """Load the run directory's newest intact checkpoint into the model, optimiser, sampler and
    torch's RNG, refusing one of another config; the step it reached (0 with no checkpoint)."""
    state = latest_checkpoint(run_dir)
    if state is None:
        return 0
    diffs = config_differences(state["config"], plain(cfg))
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different config; refusing to resume: " + "; ".join(diffs))
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["rng"]["sampler"])
    torch.set_rng_state(state["rng"]["torch"])
    device = next(model.parameters()).device
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    return state["step"]


def write(save, run_dir: Path, step: int, what: str) -> None:
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


def git_commit() -> str | None:
    """The commit of minicl's source checkout (marked -dirty with uncommitted changes), None when installed."""

    def git(*args):
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return commit and commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


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


def write_provenance(run_dir: Path) -> None:
    """run_dir/provenance.json, once, when a run starts."""
    command = "python -m minicl.train " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("train.py") else None
    write_json(
        Path(run_dir) / PROVENANCE,
        {
            "command": command,
            "commit": git_commit(),
            "machine": machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def read_provenance(run_dir: Path) -> dict | None:
    path = Path(run_dir) / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else None
