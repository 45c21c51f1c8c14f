"""``FlowDensity``: the estimator machinery every skflow density shares.

One path for the data: validate -> standardise (its log-determinant kept) ->
flow -> base log-density. Subclasses only say which flow to build.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import EarlyStopping
from skorch.helper import predefined_split

from ._preprocessing import Standardizer
from ._training import BatchIterator, DivergenceGuard, FlowNet, NegativeLogLikelihood, TensorDataset

__all__ = ["FlowDensity", "resolve_device"]

#: Rows per forward pass when scoring or sampling (keeps memory flat).
INFERENCE_BATCH = 8192
#: Gradients are clipped to this norm.
GRADIENT_CLIP = 10.0
#: Weight and scale of the wide Gaussian mixed into tabular densities (see
#: :func:`_with_tail_guard`).
TAIL_WEIGHT = 1e-3
TAIL_SCALE = 3.0


def _with_tail_guard(log_flow, Z, weight=TAIL_WEIGHT):
    """``log((1 - w) p_flow(z) + w N(z; 0, s^2 I))`` per row, in standardised units.

    A flow can expand a near-constant column enormously (bounded per-layer
    log-scales still compound over layers), so a held-out value that no
    training row had, even inside the training range, may get a log-density
    of -1e6. Mixing in a wide Gaussian with weight ``TAIL_WEIGHT`` keeps the
    density normalised, costs at most ``-log(1 - w)`` (0.001 nats) on any row,
    and bounds the damage to that of a Gaussian of scale ``TAIL_SCALE``.
    """
    if weight == 0:
        return log_flow
    d = Z.shape[1]
    log_wide = -0.5 * np.sum((Z / TAIL_SCALE) ** 2, axis=1) - d * np.log(TAIL_SCALE * np.sqrt(2 * np.pi))
    return np.logaddexp(np.log1p(-weight) + log_flow, np.log(weight) + log_wide)


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when a GPU is present, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _split_indices(n_samples, validation_fraction, rng):
    """Shuffled (train, validation) row indices; validation may be empty."""
    order = rng.permutation(n_samples)
    n_valid = int(round(validation_fraction * n_samples))
    if validation_fraction > 0:
        n_valid = min(max(n_valid, 1), n_samples - 1)
    return order[n_valid:], order[:n_valid]


class FlowDensity(DensityMixin, BaseEstimator):
    """Base class of skflow's density estimators. Not used directly.

    Subclasses define ``__init__`` with their hyperparameters and
    ``_build_flow(n_features)`` returning a :class:`skflow.flows.Flow`.
    The common parameters are documented on each subclass.
    """

    #: Weight of the wide Gaussian mixed into the density (0 turns it off).
    _tail_weight = TAIL_WEIGHT

    _parameter_constraints = {
        "hidden_features": [tuple, list],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "dequantize": [StrOptions({"auto"}), "boolean"],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # ------------------------------------------------------------------ fit
    def _build_flow(self, n_features):
        """Return the torch :class:`~skflow.flows.Flow` to fit (defined by subclasses)."""
        raise TypeError(f"{type(self).__name__} does not define _build_flow; use a concrete estimator.")

    def _check_hidden_features(self):
        hidden = self.hidden_features
        if len(hidden) == 0 or not all(isinstance(h, Integral) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_features must be a non-empty tuple of positive integers, got {hidden!r}."
            )

    def _make_net(self, module, device, noise_width, valid_data, seed, smoothing_std=None):
        callbacks = [("divergence_guard", DivergenceGuard(max_norm=GRADIENT_CLIP))]
        train_split = None
        if valid_data is not None:
            train_split = predefined_split(TensorDataset(valid_data, device=device))
            stopper = EarlyStopping(patience=self.patience, threshold=0.0, threshold_mode="abs", load_best=True)
            callbacks.append(("early_stopping", stopper))
        smoothing = {} if smoothing_std is None else {"iterator_train__smoothing_std": smoothing_std}
        return FlowNet(
            module,
            criterion=NegativeLogLikelihood,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=train_split,
            callbacks=callbacks,
            dataset=TensorDataset,
            dataset__device=device,
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_train__noise_width=noise_width,
            iterator_train__seed=seed,
            iterator_valid=BatchIterator,
            **smoothing,
            device=device,
            verbose=int(self.verbose),
        )

    def _prepare(self, X):
        """Validate X for fit and set the standardiser; return standardised X."""
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        self.standardizer_ = Standardizer(self.dequantize).fit(X)
        return self.standardizer_.transform(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the flow to X by maximum likelihood (forward KL).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. Integer-valued columns are dequantized (see
            ``dequantize``).
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._check_hidden_features()
        Z = self._prepare(X)
        rng = check_random_state(self.random_state)
        init_seed, loop_seed = rng.randint(np.iinfo(np.int32).max, size=2)
        train, valid = _split_indices(len(Z), self.validation_fraction, rng)
        device = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            module = self._build_flow(Z.shape[1])
            valid_data = Z[valid] if len(valid) else None
            net = self._make_net(
                module, device, self.standardizer_.noise_width, valid_data, int(loop_seed), self._smoothing_std()
            )
            net.fit(Z[train])
        self.net_ = net
        self.history_ = net.history
        self.n_iter_ = len(net.history)
        self._check_trained(Z[train])
        return self

    def _smoothing_std(self):
        """Per-feature std of the Gaussian training noise on point-mass columns (None: none)."""
        noise = getattr(self, "point_mass_noise", 0.0)
        return self.standardizer_.point_mass_ * noise if noise > 0 else None

    def _check_trained(self, Z):
        """Refuse to return a model that cannot score its own training data."""
        log_prob = self._log_prob(Z[:INFERENCE_BATCH])
        if not np.all(np.isfinite(log_prob)):
            raise FloatingPointError(
                "The fitted flow gives non-finite log-densities on its own training data. "
                "Try a smaller `lr`, a larger `weight_decay` or fewer `n_transforms`."
            )

    # -------------------------------------------------------------- scoring
    @property
    def _module(self):
        module = self.net_.module_
        module.eval()
        return module

    def _device(self):
        return next(self.net_.module_.parameters()).device

    @torch.no_grad()
    def _log_prob(self, Z):
        module, device = self._module, self._device()
        out = np.empty(len(Z))
        for start in range(0, len(Z), INFERENCE_BATCH):
            batch = torch.as_tensor(Z[start : start + INFERENCE_BATCH], dtype=torch.float32, device=device)
            out[start : start + len(batch)] = module.log_prob(batch).double().cpu().numpy()
        return out

    def score_samples(self, X):
        """Log-density of each sample, in the units of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``log p(x)`` per row (float64), the standardisation's
            log-determinant included. The density is the flow's mixed with a
            wide Gaussian of weight 0.001 (in standardised units, scale 3),
            which keeps unseen values from getting absurdly low scores.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        Z = self.standardizer_.transform(X)
        return _with_tail_guard(self._log_prob(Z), Z, self._tail_weight) + self.standardizer_.log_det_

    def score(self, X, y=None):
        """Mean log-likelihood of X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.
        y : None
            Ignored.

        Returns
        -------
        log_likelihood : float
            Mean of :meth:`score_samples`.
        """
        return float(np.mean(self.score_samples(X)))

    # ------------------------------------------------------------- sampling
    @validate_params(
        {"n_samples": [Interval(Integral, 1, None, closed="left")], "random_state": ["random_state"]},
        prefer_skip_nested_validation=True,
    )
    def sample(self, n_samples=1, random_state=None):
        """Draw samples from the fitted density.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw; None draws fresh randomness.

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            Samples in the units of the training data; a DataFrame with the
            training columns when the estimator was fitted on one.
            Integer-valued columns come back as integers.
        """
        check_is_fitted(self)
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        Z = self._draw(n_samples, seed)
        rng = np.random.default_rng(seed)
        wide = rng.random(n_samples) < self._tail_weight  # rows drawn from the tail guard
        Z[wide] = TAIL_SCALE * rng.standard_normal((int(wide.sum()), Z.shape[1]))
        return self._wrap_output(self.standardizer_.inverse_transform(Z))

    @torch.no_grad()
    def _draw(self, n_samples, seed):
        module, device = self._module, self._device()
        generator = torch.Generator(device=device).manual_seed(seed)
        chunks = []
        for start in range(0, n_samples, INFERENCE_BATCH):
            n = min(INFERENCE_BATCH, n_samples - start)
            chunks.append(module.sample(n, generator).double().cpu().numpy())
        return np.concatenate(chunks)

    def _wrap_output(self, X):
        if hasattr(self, "feature_names_in_"):
            import pandas as pd

            return pd.DataFrame(X, columns=self.feature_names_in_)
        return X
