"""minicl: what transformers learn in context, in pure PyTorch (Garg et al. 2022 and beyond).

`import minicl` and `import minicl.model` need torch only; Hydra, sklearn and xgboost load
with the modules that use them.
"""

from minicl.checkpoint import load_model
from minicl.model import ModelConfig, Transformer

__all__ = ["ModelConfig", "Transformer", "load_model"]
