"""Atomic checkpoint files and `load_model`. Imports torch only."""

import os
import warnings
from pathlib import Path

import torch

from minicl.model import ModelConfig, Transformer

STATE = "state.pt"  # latest checkpoint of a run; the one before it is kept as state.prev.pt
PREVIOUS = "state.prev.pt"


class CheckpointError(RuntimeError):
    pass


def save_atomic(obj, path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: `path` is never half-written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    """The newest readable checkpoint of a run (state.pt, else state.prev.pt), or None if it has none."""
    run_dir = Path(run_dir)
    candidates = [run_dir / STATE, run_dir / PREVIOUS, run_dir / (STATE + ".new")]
    errors = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for e in errors:
            warnings.warn(f"{e}; using {path.name} (step {state['step']}) instead", stacklevel=2)
        return state
    if errors:
        raise CheckpointError("; ".join(errors))
    return None


def load_model(path: str | os.PathLike) -> Transformer:
    """The trained Transformer of a run directory (or a checkpoint file), in eval mode on CPU."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run directory or checkpoint at {path}")
    state = latest_checkpoint(path) if path.is_dir() else read_checkpoint(path)
    if state is None:
        found = sorted(p.name for p in path.iterdir())[:10]
        raise CheckpointError(f"{path} holds no minicl checkpoint ({STATE}); found {found}")
    model = Transformer(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()
