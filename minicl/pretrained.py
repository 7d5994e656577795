"""Trained models shipped with minicl: use them with no training and no network.

    minicl.pretrained.names()         # decision_tree, linear, linear_d20, quick, relu_2nn, sparse_linear
    minicl.pretrained.load("linear")  # the model, as minicl.load_model("pretrained:linear")
    minicl.pretrained.info("linear")  # its config, the command, commit and machine that trained it,
                                      # and its errors on the standard setting with their bands

Every command that takes `run=` takes `run=pretrained:<name>`. The four claim models are
`minicl.reproduce`'s CPU-size runs; `python -m minicl.reproduce source=pretrained` judges them.
`python -m minicl.pretrained [NAME ...]` rebuilds the shipped files from the runs that trained
them (SOURCES), evaluating each again, so they follow when a claim config changes.
"""

import sys
from pathlib import Path

from minicl.checkpoint import PRETRAINED, SHIPPED, latest_checkpoint, load_model, shipped_info, shipped_names
from minicl.common import save_atomic, write_json
from minicl.model import PromptModel
from minicl.reproduce import CLAIMS, evaluated, training_curve
from minicl.rundir import git_commit, machine, read_provenance, training_seconds

SOURCES = {  # name: (the run directory it ships, the command that trains it there)
    **{claim: (f"runs/claims/cpu/{claim}/seed0", f"python -m minicl.reproduce claims=[{claim}]") for claim in CLAIMS},
    **{
        name: (
            f"runs/ship/{name}",
            f"python -m minicl.train task=linear experiment={name} hydra.run.dir=runs/ship/{name}",
        )
        for name in ("quick", "linear_d20")
    },
}


def names() -> list[str]:
    return shipped_names()


def load(name: str) -> PromptModel:
    return load_model(PRETRAINED + name)


def info(name: str) -> dict:
    return shipped_info(name)


def ship(
    name: str, run_dir: str | Path | None = None, n_prompts: int = 1280, device: str = "cpu", to: Path = SHIPPED
) -> dict:
    """Write TO/<name>.pt (the run's weights and config) and <name>.json (what info() returns)
    from a finished run (SOURCES[name] by default) and its evaluation on the standard setting
    (its metrics.json when newer than its checkpoint, else a fresh one)."""
    run_dir = Path(run_dir or SOURCES[name][0])
    state = latest_checkpoint(run_dir)
    if state is None or state["step"] < state["config"]["trainer"]["steps"]:
        raise ValueError(
            f"{run_dir} holds no finished run to ship as {name!r}; train it first"
            + (f": {SOURCES[name][1]}" if name in SOURCES else "")
        )
    save_atomic({key: state[key] for key in ("model", "model_config", "config", "step")}, Path(to) / f"{name}.pt")
    metrics = evaluated(run_dir, n_prompts, device)
    standard = metrics["settings"]["standard"]
    provenance = read_provenance(run_dir)
    record = {
        "name": name,
        "task": metrics["task"],
        "n_dims": metrics["n_dims"],
        "n_points": metrics["n_points"],
        "steps": state["step"],
        "config": state["config"],
        "command": provenance["command"] if provenance else SOURCES.get(name, (None, None))[1],
        "commit": provenance["commit"] if provenance else f"{git_commit()} (when shipped: the run recorded none)",
        "machine": provenance["machine"] if provenance else machine(),
        "train_seconds": training_seconds(run_dir),
        "evaluation": {
            "setting": "standard",
            "n_prompts": n_prompts,
            "seed": metrics["seed"],
            "metric": standard["metric"],
            "trivial": standard["trivial"],
            "models": standard["models"],
        },
        "curve": training_curve(run_dir, range(metrics["n_points"]), metrics, device),
    }
    write_json(Path(to) / f"{name}.json", record)
    return record


def main(argv: list[str]) -> None:
    for name in argv or SOURCES:
        if name not in SOURCES:
            raise SystemExit(f"unknown shipped model {name!r}; known: {sorted(SOURCES)}")
        record = ship(name)
        model = record["config"]["model"]["arch"]
        k = min(2 * record["n_dims"], record["n_points"] - 1)
        print(
            f"shipped {name}: {record['task']}, {record['steps']} steps, error at k={k} "
            f"{record['evaluation']['models'][model]['mean'][k]:.4f} ({SHIPPED / name}.pt)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
