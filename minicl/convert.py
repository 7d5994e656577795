"""The original code's run directories (Garg et al.'s released models) as minicl runs.

An original run directory holds `config.yaml` and `state.pt` ({"model_state_dict", ...}) or
`model_<step>.pt` (a bare state dict) of a TransformerModel: `_read_in` Linear, a HuggingFace
GPT2Model `_backbone` (Conv1D weights stored transposed) and `_read_out` Linear.
`python -m minicl.convert ORIGINAL_DIR OUT_DIR` writes it once as a minicl run directory.
Imports torch only (PyYAML, which Hydra brings, is loaded when a config is read). It sits below
checkpoint.py, which reads original runs through it.
"""

import re
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from minicl.common import STATE, CheckpointError, save_atomic
from minicl.model import ModelConfig

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
    task = {
        "name": TASK_NAMES[task_name],
        "n_dims": model_config.n_dims,
        "sparsity": 3,
        "noise_std": 1.0,
        "hidden": 100,
        "depth": 4,
        "w_scale": 1.0,
        "num_tasks": training.get("num_tasks"),
        "num_training_examples": training.get("num_training_examples"),
        "curriculum": {
            "dims": _curriculum(cur.get("dims"), model_config.n_dims, model_config.n_dims),
            "points": _curriculum(cur.get("points"), model_config.n_positions, model_config.n_positions),
        },
    }
    for key, value in (training.get("task_kwargs") or {}).items():
        if key in TASK_KWARGS:
            task[TASK_KWARGS[key]] = value
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


def convert_run(original_dir: str | Path, out_dir: str | Path) -> Path:
    """Write an original run directory as a minicl one (state.pt without optimiser state)."""
    state = read_original_run(Path(original_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(state, out / STATE)
    return out / STATE


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m minicl.convert ORIGINAL_RUN_DIR OUT_DIR")
    print(f"wrote {convert_run(*argv)}")


if __name__ == "__main__":
    main()
