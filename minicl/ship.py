"""`python -m minicl.ship [NAME ...]`: rebuild the models shipped in the package (minicl/shipped,
read by minicl.pretrained) from the runs that trained them (SOURCES), evaluating each again, so
they follow when a claim config changes. With no NAME, every one of SOURCES.
"""

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minicl.common import save_atomic, write_json
from minicl.pretrained import RECIPES
from minicl.reproduce import evaluated, training_curve
from minicl.rundir import (
    SHIPPED,
    git_commit,
    latest_checkpoint,
    machine,
    model_from_state,
    read_provenance,
    read_run,
    training_seconds,
)
from minicl.train import queries_errors

SOURCES = RECIPES  # name: (the run directory it ships, the commands that train it there from nothing)


def ship(
    name: str, run_dir: str | Path | None = None, n_prompts: int = 1280, device: str = "cpu", to: Path = SHIPPED
) -> dict:
    """Write TO/<name>.pt (the run's weights and config) and <name>.json (what minicl.pretrained.info returns)
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
    provenance = read_provenance(run_dir)
    record = {
        "kind": "shipped",
        "name": name,
        "task": state["config"]["task"]["name"],
        "n_dims": state["config"]["task"]["n_dims"],
        "n_points": state["config"]["task"]["curriculum"]["points"]["end"],
        "steps": state["step"],
        "config": state["config"],
        "command": SOURCES[name][1] if name in SOURCES else provenance and provenance.command,
        "trained_as": provenance.command if provenance else None,
        "commit": provenance.commit if provenance else f"{git_commit()} (when shipped: the run recorded none)",
        "machine": provenance.machine if provenance else machine(),
        "train_seconds": training_seconds(run_dir),
    }
    if state["config"]["trainer"]["loss_on"] == "queries":
        record |= {"evaluation": queries_evaluation(run_dir, n_prompts, device), "curve": {"steps": []}}
    else:
        metrics = evaluated(run_dir, n_prompts, device)
        standard = metrics["settings"]["standard"]
        record["evaluation"] = {
            "setting": "standard",
            "n_prompts": n_prompts,
            "seed": metrics["seed"],
            "metric": standard["metric"],
            "trivial": standard["trivial"],
            "models": standard["models"],
        }
        record["curve"] = training_curve(run_dir, range(metrics["n_points"]), metrics, device)
    write_json(Path(to) / f"{name}.json", record)
    return record


def queries_evaluation(run_dir: Path, n_prompts: int, device: str, seed: int = 0) -> dict:
    """A model trained as ICLRegressor reads (trainer.loss_on=queries): its squared error on the
    standardised labels after each context length (minicl.train.queries_errors), with the standard
    error of each mean, beside ridge's and the context mean's."""
    state = read_run(run_dir)
    errors = queries_errors(
        model_from_state(state), OmegaConf.create(state["config"]), n_prompts, seed, torch.device(device)
    )
    return {
        "setting": "queries",
        "n_prompts": n_prompts,
        "seed": seed,
        "metric": "squared error on labels standardised on the context",
        "contexts": {
            c: {name: {"mean": e.mean().item(), "sem": (e.std() / len(e) ** 0.5).item()} for name, e in by_name.items()}
            for c, by_name in errors.items()
        },
    }


def main(argv: list[str]) -> None:
    for name in argv or SOURCES:
        if name not in SOURCES:
            raise SystemExit(f"unknown shipped model {name!r}; known: {sorted(SOURCES)}")
        record = ship(name)
        if record["evaluation"]["setting"] == "queries":
            errors = record["evaluation"]["contexts"][str(min(40, record["n_points"]))]
            print(
                f"shipped {name}: {record['task']}, {record['steps']} steps, error after 40 rows "
                f"{errors['model']['mean']:.4f} (ridge {errors['ridge']['mean']:.4f}) ({SHIPPED / name}.pt)"
            )
            continue
        model = record["config"]["model"]["arch"]
        k = min(2 * record["n_dims"], record["n_points"] - 1)
        print(
            f"shipped {name}: {record['task']}, {record['steps']} steps, error at k={k} "
            f"{record['evaluation']['models'][model]['mean'][k]:.4f} ({SHIPPED / name}.pt)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
