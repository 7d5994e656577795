"""minicl: what transformers learn in context, in pure PyTorch (Garg et al. 2022 and beyond).

`import minicl` and `import minicl.model` need torch only; Hydra, sklearn and xgboost load
with the modules that use them (minicl.ICLRegressor loads scikit-learn on first use).
"""

from minicl.model import ModelConfig, Transformer, build_model
from minicl.rundir import load_model

__all__ = ["ICLClassifier", "ICLRegressor", "ModelConfig", "Transformer", "build_model", "load_model"]


def __getattr__(name: str):
    if name in ("ICLRegressor", "ICLClassifier"):
        from minicl import estimators  # deferred: it loads scikit-learn

        return getattr(estimators, name)
    raise AttributeError(f"module 'minicl' has no attribute {name!r}")
