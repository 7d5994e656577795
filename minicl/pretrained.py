"""Trained models shipped with minicl: use them with no training and no network.

    minicl.pretrained.names()         # decision_tree, linear, linear_d20, linear_deep, noise_mixture, quick, ...
    minicl.pretrained.load("linear")  # the model, as minicl.load_model("pretrained:linear")
    minicl.pretrained.info("linear")  # its config, the command, commit and machine that trained it,
                                      # and its errors on the standard setting with their bands

Every command that takes `run=` takes `run=pretrained:<name>`. The four claim models are
`minicl.reproduce`'s CPU-size runs; `python -m minicl.reproduce source=pretrained` judges them.
`python -m minicl.ship [NAME ...]` rebuilds the shipped files from the runs that trained them.
"""

from minicl.model import PromptModel
from minicl.rundir import PRETRAINED, load_model, shipped_info, shipped_names


def names() -> list[str]:
    return shipped_names()


def load(name: str) -> PromptModel:
    return load_model(PRETRAINED + name)


def info(name: str) -> dict:
    return shipped_info(name)
