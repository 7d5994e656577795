"""A run's checkpoints (written atomically, read back with a clear error) and `load_model`,
for minicl's run directories, the models shipped in the package (`pretrained:<name>`) and,
through convert.py, the original code's. Imports torch only.
"""

import json
import os
import warnings
from pathlib import Path

import torch

from minicl.common import STATE, CheckpointError, save_atomic
from minicl.convert import read_original_run
from minicl.model import ModelConfig, PromptModel, build_model

PREVIOUS = "state.prev.pt"  # the checkpoint before the latest, STATE
SHIPPED = Path(__file__).resolve().parent / "shipped"  # the trained models that come with the package
PRETRAINED = "pretrained:"  # `run=pretrained:<name>` names a shipped model


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
    path = shipped_path(PRETRAINED + name).with_suffix(".json")
    return json.loads(path.read_text())


def output_dir(run: str | os.PathLike) -> Path:
    """Where the commands write what they find about a run: its own directory, or for a shipped
    model (inside the installed package) runs/pretrained/<name> below the working directory."""
    if shipped_path(run) is not None:
        return Path("runs") / "pretrained" / str(run).removeprefix(PRETRAINED)
    return Path(run)


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
    for e in errors:
        warnings.warn(f"{e}; using {name} (step {state['step']}) instead", stacklevel=2)
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


def model_from_state(state: dict) -> PromptModel:
    """The model a checkpoint (as read_run returns it) holds, in eval mode."""
    model = build_model(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def load_model(path: str | os.PathLike) -> PromptModel:
    """The trained model of a run directory (minicl's or the original code's), of a checkpoint
    file, or shipped with minicl (`pretrained:<name>`, minicl.pretrained.names()), in eval mode on CPU."""
    return model_from_state(read_run(path))
