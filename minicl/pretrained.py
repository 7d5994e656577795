"""Trained models shipped with minicl: use them with no training and no network.

    minicl.pretrained.names()         # decision_tree, linear, linear_d20, linear_deep, noise_mixture, quick, ...
    minicl.pretrained.load("linear")  # the model, as minicl.load_model("pretrained:linear")
    minicl.pretrained.info("linear")  # its config, the command, commit and machine that trained it,
                                      # and its errors on the standard setting with their bands

Every command that takes `run=` takes `run=pretrained:<name>`. The four claim models are
`minicl.reproduce`'s CPU-size runs; `python -m minicl.reproduce source=pretrained` judges them.
`python -m minicl.ship [NAME ...]` rebuilds the shipped files from the runs that trained them.
`info(name)["command"]` is the recipe (RECIPES): the commands that train the model from nothing,
run as written from an empty directory; `info(name)["trained_as"]`, the command as it ran then.
"""

from minicl.model import PromptModel
from minicl.rundir import PRETRAINED, load_model, shipped_info, shipped_names


def recipe(task: str, experiment: str, run_dir: str, *overrides: str) -> tuple[str, str]:
    """(run_dir, the command that trains `experiment` there)."""
    words = (
        "python -m minicl.train",
        f"task={task}",
        f"experiment={experiment}",
        *overrides,
        f"hydra.run.dir={run_dir}",
    )
    return run_dir, " ".join(words)


RECIPES = {  # name: (the run directory it is shipped from, the commands that train it there from nothing)
    **{  # minicl.reproduce's CPU-size claim runs, seed 0
        claim: recipe(claim, f"claim_{claim}", f"runs/claims/cpu/{claim}/seed0", "trainer.seed=0")
        for claim in ("linear", "sparse_linear", "relu_2nn", "decision_tree")
    },
    **{
        name: recipe(task, name, f"runs/ship/{name}")
        for name, task in (
            ("quick", "linear"),
            ("linear_d20", "linear"),
            ("linear_deep", "linear"),
            ("noise_mixture", "mixture"),
            ("tables_base", "tables"),
        )
    },
}
_, fine_tune = recipe("tables", "tables", "runs/ship/tables", "trainer.init=runs/ship/tables_base")
RECIPES["tables"] = ("runs/ship/tables", RECIPES["tables_base"][1] + " && " + fine_tune)  # from tables_base's run


def names() -> list[str]:
    return shipped_names()


def load(name: str) -> PromptModel:
    return load_model(PRETRAINED + name)


def info(name: str) -> dict:
    """The model's record, its `command` the recipe that trains it from nothing (RECIPES) and
    `trained_as` the command as it ran (its configs' names then)."""
    record = shipped_info(name)
    return record | {"command": RECIPES[name][1], "trained_as": record.get("trained_as", record["command"])}
