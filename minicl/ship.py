"""`python -m minicl.ship [NAME ...]`: rebuild the models shipped in the package (minicl/shipped,
read by minicl.pretrained) from the runs that trained them (SOURCES), evaluating each again, so
they follow when a claim config changes. With no NAME, every one of SOURCES.
"""

import sys
from pathlib import Path

from minicl.common import save_atomic, write_json
from minicl.reproduce import CLAIMS, evaluated, training_curve
from minicl.rundir import SHIPPED, git_commit, latest_checkpoint, machine, read_provenance, training_seconds

SOURCES = {  # name: (the run directory it ships, the command that trains it there)
    **{claim: (f"runs/claims/cpu/{claim}/seed0", f"python -m minicl.reproduce claims=[{claim}]") for claim in CLAIMS},
    **{
        name: (
            f"runs/ship/{name}",
            f"python -m minicl.train task={task} experiment={name} hydra.run.dir=runs/ship/{name}",
        )
        for name, task in (
            ("quick", "linear"),
            ("linear_d20", "linear"),
            ("linear_deep", "linear"),
            ("noise_mixture", "mixture"),
        )
    },
}


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
        "command": provenance.command if provenance else SOURCES.get(name, (None, None))[1],
        "commit": provenance.commit if provenance else f"{git_commit()} (when shipped: the run recorded none)",
        "machine": provenance.machine if provenance else machine(),
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
