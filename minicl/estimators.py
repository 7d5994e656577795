"""scikit-learn estimators around a trained in-context learner.

`fit(X, y)` only keeps the context; `predict(X)` reads the context once and predicts every query
row from it (the transformer's one pass, `after_prompt`). The default model is the shipped
`tables` model (task=tables: a prior over small real tables of up to 20 features and up to 100
rows, trained as the regressor reads a table).

A table is read as the model was trained: X and y standardised on the context (each feature and
the label to mean 0 and variance 1, minicl.tasks.standardize; `standardize=False` leaves X as
given), zero-padded to the model's n_dims, and the predictions mapped back; more features than
n_dims are an error. Models trained on other tasks saw labels spread as x . w for w ~ N(0, I), so
for them y is scaled to sqrt(features) after standardising. `n_estimators` averages the
predictions over random orders of the features (the first reads them as given) and, for a context
longer than the model's positions allow (n_positions - 1 rows), over random subsets of that many
rows (`long_context="subsample"`, the default; "error" refuses such a context), seeded by
`random_state`.
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
from minicl.rundir import model_from_state, read_run
from minicl.tasks import context_stats, standardize

DEFAULT_MODEL = "pretrained:tables"
CLASSIFIER_MODEL = "pretrained:linear_d20"


class _InContext(BaseEstimator):
    labels_as_given = False  # the classifier's ±1 labels are read as they are

    def __init__(
        self,
        model=DEFAULT_MODEL,
        n_estimators: int = 4,
        standardize: bool = True,
        long_context: str = "subsample",
        random_state: int = 0,
        batch_size: int = 512,
    ):
        self.model = model
        self.n_estimators = n_estimators
        self.standardize = standardize
        self.long_context = long_context
        self.random_state = random_state
        self.batch_size = batch_size

    def _model(self) -> PromptModel:
        if isinstance(self.model, PromptModel):
            return copy.deepcopy(self.model).eval()  # the caller's model stays as it was
        if isinstance(self.model, (str, Path)):
            return model_from_state(read_run(self.model))
        raise TypeError(
            f"model must be a minicl model (minicl.model.build_model), a run directory or "
            f"'pretrained:<name>', got {type(self.model).__name__}"
        )

    def _fit_context(self, X, y):
        if self.long_context not in ("error", "subsample"):
            raise ValueError(f"long_context must be 'error' or 'subsample', got {self.long_context!r}")
        if not (isinstance(self.n_estimators, int) and self.n_estimators >= 1):
            raise ValueError(f"n_estimators must be a positive integer, got {self.n_estimators!r}")
        self.model_ = self._model()
        c = self.model_.config
        if X.shape[1] > c.n_dims:
            raise ValueError(
                f"X has {X.shape[1]} features but the model reads at most n_dims={c.n_dims}; "
                "select or project features first (e.g. sklearn's PCA in a Pipeline)"
            )
        room = len(X) if c.max_points is None else min(len(X), c.max_points - 1)  # one position is the queries'
        if room < len(X) and self.long_context == "error":
            raise ValueError(
                f"the context has {len(X)} examples but the model has room for {room} "
                f"(n_positions={c.n_positions}); pass long_context='subsample' to use random subsets of {room}"
            )
        rng = np.random.default_rng(self.random_state)
        self.members_ = [  # (rows, feature order) of each member of the ensemble
            (
                np.arange(room) if room == len(X) else np.sort(rng.choice(len(X), room, replace=False)),
                np.arange(X.shape[1]) if i == 0 else rng.permutation(X.shape[1]),
            )
            for i in range(self.n_estimators)
        ]
        self.context_x_, self.context_y_ = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.float64)
        return self

    @torch.no_grad()
    def _raw_predict(self, X) -> np.ndarray:
        """The mean over the ensemble of the model's predictions, on the scale of the context's y."""
        check_is_fitted(self)
        queries = torch.as_tensor(validate_data(self, X, reset=False, dtype=np.float64))
        total = torch.zeros(len(queries), dtype=torch.float64)
        for rows, order in self.members_:
            xs = torch.cat((self.context_x_[rows], queries))[:, order][None]  # (1, C + Q, F)
            total += self._read(xs, self.context_y_[rows][None])
        return (total / len(self.members_)).numpy()

    def _read(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Predictions for rows C.. of xs (1, C + Q, F) from the first C (their labels ys (1, C))."""
        C, n_dims = ys.shape[1], self.model_.config.n_dims
        x, y = standardize(xs, torch.cat((ys, ys.new_zeros(1, xs.shape[1] - C)), dim=1), C)
        mean, scale = context_stats(ys, C)
        if self.labels_as_given:
            y, mean, scale = ys, torch.zeros_like(mean), torch.ones_like(scale)
        spread = self._label_spread(xs.shape[-1])
        x = torch.nn.functional.pad(x if self.standardize else xs, (0, n_dims - xs.shape[-1])).float()
        context_y = (y[:, :C] * spread).float()
        out = [
            self.model_.after_prompt(x[:, :C], context_y, x[:, C + i : C + i + self.batch_size])[0]
            for i in range(0, xs.shape[1] - C, self.batch_size)
        ]
        return torch.cat(out).double() / spread * scale[0, 0] + mean[0, 0]

    def _label_spread(self, features: int) -> float:
        """The spread the model saw labels at: 1 for models trained on task=tables and for
        classifiers, else sqrt(features), the spread of x . w with w ~ N(0, I)."""
        return 1.0 if self.labels_as_given or self.model_.trained_on == "tables" else math.sqrt(features)


class ICLRegressor(RegressorMixin, _InContext):
    """A trained in-context regressor as an sklearn regressor; y of any scale and offset
    (standardised on the context, mapped back)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        return self._fit_context(X, y)

    def predict(self, X) -> np.ndarray:
        return self._raw_predict(X)


class ICLClassifier(ClassifierMixin, _InContext):
    """A trained linear_classification model as an sklearn binary classifier (labels as ±1 in
    context). No shipped model is trained on real tables for classification: the default,
    linear_d20, reads linear functions' signs, so this is for synthetic tasks."""

    labels_as_given = True

    def __init__(
        self,
        model=CLASSIFIER_MODEL,
        n_estimators: int = 4,
        standardize: bool = True,
        long_context: str = "subsample",
        random_state: int = 0,
        batch_size: int = 512,
    ):
        super().__init__(model, n_estimators, standardize, long_context, random_state, batch_size)

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
