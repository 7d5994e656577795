"""scikit-learn estimators around a trained in-context learner.

`fit(X, y)` only keeps the context; `predict(X)` reads the context once and predicts every query
row from it (the transformer's one pass, `after_prompt`). The default model is the shipped
`linear_d20` (linear functions of up to 20 features).

The model saw inputs x ~ N(0, I) of width n_dims, and labels on the scale of its training task.
So X is standardised on the context (each feature to mean 0 and variance 1; `standardize=False`
leaves it as given), narrower inputs are zero-padded, and more features than n_dims are an error.
The regressor standardises y on the context too, scales it to sqrt(features) (the spread of
x . w for w ~ N(0, I) on that many features, as in training), and maps the predictions back. A
context longer than the model's positions allow (n_positions - 1 pairs) is an error, or with
`long_context="subsample"` a random subset of that many pairs (seeded by `random_state`).
"""

import copy
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from minicl.model import PromptModel
from minicl.rundir import load_model

DEFAULT_MODEL = "pretrained:linear_d20"


class _InContext(BaseEstimator):
    def __init__(
        self,
        model=DEFAULT_MODEL,
        standardize: bool = True,
        long_context: str = "error",
        random_state: int = 0,
        batch_size: int = 512,
    ):
        self.model = model
        self.standardize = standardize
        self.long_context = long_context
        self.random_state = random_state
        self.batch_size = batch_size

    def _model(self) -> PromptModel:
        if isinstance(self.model, PromptModel):
            return copy.deepcopy(self.model).eval()  # the caller's model stays as it was
        if isinstance(self.model, (str, Path)):
            return load_model(self.model)
        raise TypeError(
            f"model must be a minicl model (minicl.model.build_model), a run directory or "
            f"'pretrained:<name>', got {type(self.model).__name__}"
        )

    def _fit_context(self, X, y):
        if self.long_context not in ("error", "subsample"):
            raise ValueError(f"long_context must be 'error' or 'subsample', got {self.long_context!r}")
        self.model_ = self._model()
        c = self.model_.config
        if X.shape[1] > c.n_dims:
            raise ValueError(
                f"X has {X.shape[1]} features but the model reads at most n_dims={c.n_dims}; "
                "select or project features first (e.g. sklearn's PCA in a Pipeline)"
            )
        room = None if c.max_points is None else c.max_points - 1  # one position is the queries'
        if room is not None and len(X) > room:
            if self.long_context == "error":
                raise ValueError(
                    f"the context has {len(X)} examples but the model has room for {room} "
                    f"(n_positions={c.n_positions}); pass long_context='subsample' to use a random {room}"
                )
            keep = np.sort(np.random.default_rng(self.random_state).choice(len(X), room, replace=False))
            X, y = X[keep], y[keep]
        self.x_mean_ = X.mean(0) if self.standardize else np.zeros(X.shape[1])
        self.x_scale_ = _spread(X.std(0)) if self.standardize else np.ones(X.shape[1])
        self.context_x_ = self._inputs(X)
        self.context_y_ = torch.as_tensor(y, dtype=torch.float32)
        return self

    def _inputs(self, X) -> torch.Tensor:
        x = torch.as_tensor(((np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_).astype(np.float32))
        return torch.nn.functional.pad(x, (0, self.model_.config.n_dims - x.shape[1]))

    @torch.no_grad()
    def _raw_predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        queries = self._inputs(validate_data(self, X, reset=False, dtype=np.float64))  # (Q, D)
        xs, ys = self.context_x_[None], self.context_y_[None]
        out = [
            self.model_.after_prompt(xs, ys, queries[None, i : i + self.batch_size])[0]
            for i in range(0, len(queries), self.batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float64)


def _spread(std: np.ndarray) -> np.ndarray:
    """A scale to divide by: std, or 1 where it is 0 (a constant feature or label)."""
    return np.where(std > 0, std, 1.0)


class ICLRegressor(RegressorMixin, _InContext):
    """A trained in-context regressor (linear, sparse_linear, relu_2nn, ... models) as an sklearn
    regressor; y of any scale and offset (standardised on the context, mapped back)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        self.y_mean_, self.y_scale_ = y.mean(), _spread(y.std()) / math.sqrt(X.shape[1])
        return self._fit_context(X, (y - self.y_mean_) / self.y_scale_)

    def predict(self, X) -> np.ndarray:
        return self._raw_predict(X) * self.y_scale_ + self.y_mean_


class ICLClassifier(ClassifierMixin, _InContext):
    """A trained linear_classification model as an sklearn binary classifier (labels as ±1 in context)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                f"Only binary classification is supported: y has {len(self.classes_)} classes {self.classes_[:5]}"
            )
        return self._fit_context(X, 2.0 * encoded - 1.0)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, X) -> np.ndarray:
        return self._raw_predict(X)

    def predict_proba(self, X) -> np.ndarray:
        p = 1 / (1 + np.exp(-self.decision_function(X)))  # the model was trained with the logistic loss
        return np.stack((1 - p, p), axis=1)

    def predict(self, X) -> np.ndarray:
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]
