"""scikit-learn estimators around a trained in-context learner.

`fit(X, y)` only keeps the context; `predict(X)` makes one prompt per query row, the context in
front of it, and reads the model's prediction at the query. All queries run batched.

The model saw inputs x ~ N(0, I) of width n_dims: standardise features (StandardScaler in a
Pipeline) and give at most n_dims of them (narrower inputs are zero-padded). A context longer
than the model's positions allow (n_positions - 1 pairs) is an error, or with
`long_context="subsample"` a random subset of that many pairs (seeded by `random_state`).
"""

import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from minicl.checkpoint import load_model
from minicl.model import PromptModel


class _InContext(BaseEstimator):
    def __init__(self, model=None, long_context: str = "error", random_state: int = 0, batch_size: int = 512):
        self.model = model
        self.long_context = long_context
        self.random_state = random_state
        self.batch_size = batch_size

    def _model(self) -> PromptModel:
        if isinstance(self.model, PromptModel):
            return self.model
        if isinstance(self.model, (str, Path)):
            return load_model(self.model)
        raise TypeError(f"model must be a minicl model (minicl.model.build_model) or a run directory, got {type(self.model).__name__}")

    def _fit_context(self, X, y):
        if self.long_context not in ("error", "subsample"):
            raise ValueError(f"long_context must be 'error' or 'subsample', got {self.long_context!r}")
        self.model_ = copy.deepcopy(self._model()).eval()  # the caller's model stays as it was
        c = self.model_.config
        if X.shape[1] > c.n_dims:
            raise ValueError(f"X has {X.shape[1]} features but the model reads at most n_dims={c.n_dims}")
        room = None if c.max_points is None else c.max_points - 1  # one position is the query's
        if room is not None and len(X) > room:
            if self.long_context == "error":
                raise ValueError(
                    f"the context has {len(X)} examples but the model has room for {room} "
                    f"(n_positions={c.n_positions}); pass long_context='subsample' to use a random {room}"
                )
            keep = np.sort(np.random.default_rng(self.random_state).choice(len(X), room, replace=False))
            X, y = X[keep], y[keep]
        self.context_x_ = self._pad(X)
        self.context_y_ = torch.as_tensor(y, dtype=torch.float32)
        return self

    def _pad(self, X) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        return torch.nn.functional.pad(x, (0, self.model_.config.n_dims - x.shape[1]))

    @torch.no_grad()
    def _raw_predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        queries = self._pad(X)  # (Q, D)
        k = len(self.context_x_)
        out = []
        for start in range(0, len(queries), self.batch_size):
            q = queries[start : start + self.batch_size]
            xs = torch.cat((self.context_x_.expand(len(q), -1, -1), q.unsqueeze(1)), dim=1)  # (Q, k + 1, D)
            ys = torch.cat((self.context_y_.expand(len(q), -1), torch.zeros(len(q), 1)), dim=1)
            out.append(self.model_(xs, ys)[:, k])
        return torch.cat(out).numpy().astype(np.float64)


class ICLRegressor(RegressorMixin, _InContext):
    """A trained in-context regressor (linear, sparse_linear, relu_2nn, ... models) as an sklearn regressor."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        return self._fit_context(X, y)

    def predict(self, X) -> np.ndarray:
        return self._raw_predict(X)


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
