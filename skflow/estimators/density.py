"""``FlowDensity``: the one fit, score and sample path of every skflow density.

Following X through ``fit``::

    validate_layout (rows or images)  ->  scaler (log|det| kept)  ->  labels to context
    ->  module = Flow(transform, base), behind a dequantizer for discrete values
    ->  FlowNet (skorch: batches with seeded training noise, divergence guard,
        early stopping, learning-rate schedule, the user's callbacks)

``score_samples`` walks the same layers back: validate, scale, the module's
log-density (averaged over dequantization draws, summed over classes), the
scaler's log-determinant. An estimator class is a parameter list plus hooks:
``_build_flow`` (which transform and base), ``_make_scaler``,
``_dequantizer``, ``_smoothing_std`` (training noise), ``_context_dropout``
and ``_sample_scaled``. None overrides ``fit``, ``score_samples`` or the
sampling itself.
"""

import copy
import dataclasses
import re
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator, DensityMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, column_or_1d
from skorch.callbacks import Callback, EarlyStopping
from skorch.helper import predefined_split

from ..data import Standardizer, check_levels, restore_layout, scoring_noise, validate_layout
from ..data.columns import TableEncoder, check_table, is_mixed_table
from ..data.missing import GaussianProposal, check_missing_rows
from ..data.scaling import weighted_percentile
from ..models.distributions import CategoricalMADE
from ..models.flow import DequantizedFlow, MixedFlow
from ..training import (
    BatchIterator,
    DivergenceGuard,
    FlowNet,
    NegativeLogLikelihood,
    TensorDataset,
    lr_schedule,
    training_settings,
)
from ..training.inference import INFERENCE_BATCH, batched, resolve_device
from ..training.stacked import MemberEarlyStopping, StackedMembers

__all__ = ["TRAINING_DOC", "FlowDensity", "batched", "parameters", "resolve_device"]

#: Gradients are clipped to this norm.
GRADIENT_CLIP = 10.0
#: Proposal draws per row with missing cells: in each training step, and when scoring
#: (see :mod:`skflow.data.missing`).
MISSING_TRAIN_DRAWS = 8
MISSING_SCORE_DRAWS = 256
#: Weight and scale of the wide Gaussian mixed into tabular densities (see
#: :func:`_with_tail_guard`).
TAIL_WEIGHT = 1e-3
TAIL_SCALE = 3.0

#: The training parameters every estimator shares, documented once.
TRAINING_DOC = """
    max_epochs : int or "auto", default={max_epochs}
        Maximum number of passes over the training data.
    batch_size : int or "auto", default={batch_size}
        Rows per gradient step.
    lr : float or "auto", default={lr}
        Learning rate of AdamW. "auto" (here and for ``max_epochs``,
        ``batch_size`` and ``patience``) adapts to the number of training
        rows: up to 20,000 rows it is 1e-3 (batch 64, 300 epochs, patience
        20); beyond, the batch grows with the data (at most 1024), the rate
        with the square root of the batch (at most 4e-3), and epochs and
        patience shrink (at least 20 and 10); see
        :func:`skflow.training.sizing.training_settings`. The values used are
        in ``training_settings_``.
    weight_decay : float, default={weight_decay}
        AdamW's decoupled weight decay.
    lr_schedule : {{"constant", "cosine"}}, default="{lr_schedule}"
        "cosine": the learning rate decays from ``lr`` to 0 over
        ``max_epochs`` along a half cosine.
    validation_fraction : float, default=0.1
        Fraction of rows held out (seeded by ``random_state``) for early
        stopping on the validation log-likelihood; the best weights are
        restored. 0 turns the split and early stopping off.
    patience : int or "auto", default={patience}
        Epochs without validation improvement before training stops.
    callbacks : list of skorch callbacks or (name, callback) pairs, default=None
        Added to skflow's own (divergence guard, early stopping, schedule),
        e.g. ``skorch.callbacks.ProgressBar()``, ``Checkpoint``,
        ``LRScheduler`` or ``TensorBoard``.
    device : str or torch.device, default="auto"
        Where to train and evaluate: "auto" (CUDA when available, else the
        CPU), or any torch device ("cpu", "cuda:1", "mps"). A device that is
        not there is an error at ``fit``. Ignored with an ``accelerator``.
    precision : {{"float32", "bfloat16"}}, default="float32"
        "bfloat16" trains under bf16 autocast (matrix products in bf16,
        log-determinants and the base density in float32); validation,
        scoring and sampling stay in full precision. For GPUs with bf16.
    compile : bool, default=False
        Compile the training forward pass with ``torch.compile`` (needs a
        C++ compiler on the CPU; the first epoch pays the compilation).
    accelerator : accelerate.Accelerator, default=None
        Train data-parallel over the processes of ``accelerate launch``
        (several GPUs or machines) through skorch's ``AccelerateMixin``;
        mixed precision is then the accelerator's ``mixed_precision``. See
        :mod:`skflow.training.parallel`. Needs ``pip install
        "skflow[distributed]"``.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split, shuffling and
        every training noise. A fixed value gives identical results on the CPU.
    warm_start : bool, default=False
        When fitted already, ``fit`` continues from the fitted weights (a new
        optimizer, a fresh epoch budget and early stopping) on the X it is
        given, keeping the fitted scaling, classes and context encoding, which
        X, y and the context must match.
    verbose : int, default=0
        Print the training and validation loss per epoch when > 0."""


def _one_context_per_draw(context, n_samples):
    """A single context (a 1-D array, a Series, or one row of an array or DataFrame) repeated for each of
    ``n_samples`` draws; any other context as it is."""
    if hasattr(context, "to_frame") and not hasattr(context, "columns"):  # a Series: one row, by name
        context = context.to_frame().T.infer_objects()
    if hasattr(context, "iloc"):
        return context.iloc[np.zeros(n_samples, dtype=np.int64)] if len(context) == 1 else context
    if np.ndim(context) == 1:
        context = np.asarray(context)[None, :]
    if np.ndim(context) == 2 and len(context) == 1:
        return np.repeat(np.asarray(context), n_samples, axis=0)
    return context


def training_doc(**defaults):
    """:data:`TRAINING_DOC` with an estimator's defaults filled in."""
    values = {"max_epochs": 300, "batch_size": 64, "lr": 0.001, "weight_decay": 1e-05, "patience": 20}
    values.update(lr_schedule="constant", **defaults)
    return TRAINING_DOC.format(**values)


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
    return np.logaddexp(np.log1p(-weight) + log_flow, np.log(weight) + _log_wide(Z))


def _log_wide(Z):
    """``log N(z; 0, s^2 I)`` per row, ``s = TAIL_SCALE``: the tail guard's wide Gaussian."""
    return -0.5 * np.sum((Z / TAIL_SCALE) ** 2, axis=1) - Z.shape[1] * np.log(TAIL_SCALE * np.sqrt(2 * np.pi))


#: Declares an estimator's hyperparameters as annotated class fields, once: the generated
#: ``__init__`` takes them as keywords and stores each unchanged (scikit-learn's convention: no
#: logic and no validation there; that happens in ``fit``). A subclass adds its own fields and
#: redeclares a field to change its default.
parameters = dataclasses.dataclass(eq=False, repr=False, kw_only=True)


def _split_indices(n_samples, validation_fraction, rng):
    """Shuffled (train, validation) row indices; validation may be empty."""
    order = rng.permutation(n_samples)
    n_valid = int(round(validation_fraction * n_samples))
    if validation_fraction > 0:
        n_valid = min(max(n_valid, 1), n_samples - 1)
    return order[n_valid:], order[:n_valid]


def _take(array, rows):
    """``array[rows]``, or None for None."""
    return None if array is None else array[rows]


def _check_weights(sample_weight, X):
    """Validated non-negative weights scaled to mean 1, or None when absent or all equal (the plain fit)."""
    if sample_weight is None:
        return None
    weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if np.all(weight == weight[0]):
        return None
    return weight / weight.mean()


def _one_hot(labels, n_classes):
    return np.eye(n_classes)[labels]


def _is_conditional(estimator):
    """Whether the estimator was fitted with class labels (gates ``predict`` and ``predict_proba``)."""
    return getattr(estimator, "classes_", None) is not None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain_print(text):
    """Print skorch's per-epoch table without its colour codes (which end up in log files)."""
    print(_ANSI.sub("", text), flush=True)


def _named_callbacks(callbacks):
    """The user's callbacks as unique ``(name, callback)`` pairs."""
    named = []
    for k, item in enumerate(callbacks or []):
        name, callback = item if isinstance(item, tuple) else (f"user_{k}_{type(item).__name__}", item)
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must hold skorch callbacks, got {type(callback).__name__}.")
        named.append((name, callback))
    return named


@parameters
class FlowDensity(DensityMixin, BaseEstimator):
    """Base class of skflow's density estimators. Not used directly.

    Fitted with class labels ``y``, a density learns ``p(x | y)`` with the
    labels as the flow's context (one-hot). ``score_samples`` is then the
    marginal ``log sum_c pi_c p(x | c)``, ``predict_proba`` and ``predict``
    classify by Bayes' rule, and ``sample(..., y=...)`` draws given classes.

    Subclasses declare their hyperparameters as fields (:data:`parameters`) and define the hook
    ``_build_flow(n_features, context_features)`` returning a
    :class:`skflow.models.flow.Flow`; the other hooks have tabular defaults.
    """

    #: Weight of the wide Gaussian mixed into the density (0 turns it off).
    _tail_weight = TAIL_WEIGHT
    #: Whether X may be images: "never", "optional" or "required".
    _images = "never"
    #: Rows per forward pass when scoring and sampling.
    _inference_batch = INFERENCE_BATCH
    #: Training rows re-scored after fit to check the model is finite.
    _check_rows = INFERENCE_BATCH
    #: Whether X may have missing (NaN) cells (tabular densities).
    _missing = False

    _parameter_constraints = {
        "max_epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"constant", "cosine"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "callbacks": [list, None],
        "device": [str, torch.device],
        "precision": [StrOptions({"float32", "bfloat16"})],
        "compile": ["boolean"],
        "accelerator": [None, HasMethods(["prepare", "backward"])],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    max_epochs: object = "auto"
    batch_size: object = "auto"
    lr: object = "auto"
    weight_decay: float = 1e-5
    lr_schedule: str = "constant"
    validation_fraction: float = 0.1
    patience: object = "auto"
    callbacks: object = None
    device: object = "auto"
    precision: str = "float32"
    compile: bool = False
    accelerator: object = None
    random_state: object = None
    verbose: int = 0
    warm_start: bool = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._missing
        return tags

    # ---------------------------------------------------------------- hooks
    def _build_flow(self, n_features, context_features):
        """Return the :class:`~skflow.models.flow.Flow` over scaled rows (defined by subclasses)."""
        raise TypeError(f"{type(self).__name__} does not define _build_flow; use a concrete estimator.")

    def _check_params(self):
        """Checks beyond ``_parameter_constraints`` (run at the start of ``fit``)."""
        hidden = getattr(self, "hidden_features", None)
        if hidden is not None and (
            len(hidden) == 0 or not all(isinstance(h, Integral) and h >= 1 for h in hidden)
        ):
            raise ValueError(
                f"hidden_features must be a non-empty tuple of positive integers, got {hidden!r}."
            )

    def _make_scaler(self):
        """The map from X to the flow's units (see :mod:`skflow.data.scaling`)."""
        discrete = None if self.table_ is None else self.table_.discrete_
        return Standardizer(getattr(self, "dequantize", "auto"), discrete=discrete)

    def _dequantizer(self):
        """A dequantizer module for discrete values inside the model, or None."""
        return

    def _smoothing_std(self):
        """Per-feature std of the Gaussian training noise, in the flow's units (None: none)."""
        noise = getattr(self, "point_mass_noise", 0.0)
        point_mass = self.standardizer_.point_mass_
        return point_mass * noise if noise > 0 and point_mass is not None else None

    def _context_noise(self):
        """Std of the Gaussian training noise on the scaled continuous context (``context_noise``)."""
        return getattr(self, "context_noise", 0.0)

    def _context_noise_per_feature(self):
        """``_context_noise`` on the continuous context's columns, 0 on the one-hot labels."""
        noise = self._context_noise()
        if noise == 0 or self.n_context_features_ == 0:
            return None
        n_labels = 0 if self.classes_ is None else len(self.classes_)
        n_indicators = len(self.context_missing_)
        return [0.0] * n_labels + [noise] * self.n_context_features_ + [0.0] * n_indicators

    def _context_dropout(self):
        """Probability that a training row's class context is replaced by the null (zero) context."""
        return 0.0

    def _sample_scaled(self, module, n, context, generator):
        """Draw ``n`` rows in the flow's units (subclasses add options such as guidance)."""
        return module.sample(n, context, generator)

    # ------------------------------------------------------------------ fit
    def _validate(self, X, reset):
        if reset:
            self.table_ = TableEncoder().fit(X) if is_mixed_table(X) and self._images == "never" else None
            # a numeric DataFrame's columns and dtypes, for the frames handed back (see _restore)
            self.frame_ = TableEncoder().fit(X) if self.table_ is None and isinstance(X, pd.DataFrame) else None
        if getattr(self, "table_", None) is not None:  # a mixed table: values and category codes
            if reset:
                self.layout_ = self.image_shape_ = None
            X = self.table_.transform(check_table(self, X, reset))
            if not self._missing and np.isnan(X).any():
                raise ValueError(f"Input X contains NaN; {type(self).__name__} does not take missing values.")
        else:
            X = validate_layout(self, X, reset=reset, images=self._images, allow_nan=self._missing,
                                image_shape=getattr(self, "image_shape", None))
        if self._missing:
            check_missing_rows(X)
        if getattr(self, "n_bins", None) is not None:
            check_levels(X, self.n_bins)
        return X

    def _encode_labels(self, y, n_samples, weight=None):
        """One-hot context of the class labels ``y`` (sets ``classes_``, and ``class_prior_``, the classes'
        shares of the rows weighted by ``weight``); None without y."""
        self.classes_ = self.class_prior_ = None
        if y is None:
            return None
        y = column_or_1d(y, warn=True)
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {len(y)}.")
        try:
            check_classification_targets(y)
        except ValueError as error:
            raise ValueError(
                f"y must hold class labels (the density is then fitted as p(x | y)); {error}"
            ) from None
        self.classes_, labels = np.unique(y, return_inverse=True)
        counts = np.bincount(labels, weights=weight, minlength=len(self.classes_))
        self.class_prior_ = counts / counts.sum()
        return _one_hot(labels, len(self.classes_))

    def _scaled_context(self, context, n_samples, reset):
        """The context validated, encoded (a mixed DataFrame's categories one-hot, ``context_encoder_``) and
        standardised by ``context_scaler_``; None when absent.

        With ``reset`` the encoder and scaler are fitted (and ``n_context_features_``, the encoded width,
        set); otherwise a context is required exactly when one was given in fit. Missing context
        cells (NaN, for densities that take them) become the column's mean, 0, and each column that had
        any in fit gets an indicator column (``context_missing_``), so the model learns ``p(x | the
        context cells a row has)`` from rows like it; a column without missing cells in fit is
        filled with its mean alone.
        """
        if reset:
            self.context_scaler_ = self.context_encoder_ = None
            self.n_context_features_ = 0
            self.context_missing_ = np.zeros(0, dtype=np.int64)
        if context is None:
            if self.context_scaler_ is not None:
                raise ValueError(
                    f"{type(self).__name__} was fitted with a context of {self.n_context_features_} "
                    "features: pass context= here too."
                )
            return None
        if not reset and self.context_scaler_ is None:
            raise ValueError("context was given but the estimator was fitted without one.")
        if reset:
            self.context_encoder_ = TableEncoder().fit(context) if is_mixed_table(context) else None
        if self.context_encoder_ is not None:  # strings and categories: one indicator per category
            context = self.context_encoder_.one_hot(context)
        finite = "allow-nan" if self._missing else True
        context = check_array(context, dtype=np.float64, ensure_2d=False, input_name="context",
                              ensure_all_finite=finite)
        context = context.reshape(len(context), -1) if context.ndim == 1 else context
        if len(context) != n_samples:
            raise ValueError(f"X has {n_samples} samples but context has {len(context)}.")
        if reset:
            self.context_scaler_ = Standardizer(dequantize=False).fit(context)
            self.n_context_features_ = context.shape[1]
            self.context_missing_ = np.flatnonzero(np.isnan(context).any(axis=0))
        elif context.shape[1] != self.n_context_features_:
            raise ValueError(
                f"context has {context.shape[1]} features, but the estimator was fitted with "
                f"{self.n_context_features_}."
            )
        scaled = self.context_scaler_.transform(context)
        if not np.isnan(scaled).any() and not len(self.context_missing_):
            return scaled
        # missing context cells: the column's mean (0), and an indicator per column that had any in fit
        indicators = np.isnan(scaled[:, self.context_missing_]).astype(np.float64)
        return np.hstack([np.nan_to_num(scaled, nan=0.0), indicators])

    def _model_context(self, labels, context):
        """The model's context: the one-hot labels and the scaled context side by side (None if neither)."""
        parts = [part for part in (labels, context) if part is not None]
        return np.hstack(parts) if parts else None

    def _build_module(self, n_features, context_features):
        if self.table_ is not None:
            cards = self.table_.cardinalities_
            hidden = tuple(getattr(self, "hidden_features", (64, 64)))
            categorical = CategoricalMADE(cards, hidden, context_features)
            n_continuous = n_features - len(cards)
            flow = self._build_flow(n_continuous, context_features + sum(cards)) if n_continuous else None
            return MixedFlow(categorical, flow, self.table_.discrete_)
        flow = self._build_flow(n_features, context_features)
        dequantizer = self._dequantizer()
        return flow if dequantizer is None else DequantizedFlow(flow, dequantizer)

    def _make_net(self, module, device, valid_set, seed, member_valid=None):
        """The skorch net that trains ``module``; ``member_valid`` (x, context, weight, log_q) for stacked
        members."""
        settings = self.training_settings_
        callbacks = [("divergence_guard", DivergenceGuard(max_norm=GRADIENT_CLIP))]
        if member_valid is not None:
            x, context, weight, log_q = member_valid
            stopper = MemberEarlyStopping(x, context, weight, patience=settings["patience"], log_q=log_q)
            callbacks.append(("early_stopping", stopper))
        elif valid_set is not None:
            stopper = EarlyStopping(
                patience=settings["patience"], threshold=0.0, threshold_mode="abs", load_best=True
            )
            callbacks.append(("early_stopping", stopper))
        schedule = lr_schedule(self.lr_schedule, settings["max_epochs"])
        if schedule is not None:
            callbacks.append(("lr_schedule", schedule))
        callbacks += _named_callbacks(self.callbacks)
        dequantized = module.needs_noise
        if self.accelerator is None:
            net_class, options = FlowNet, {"device": device, "precision": self.precision}
        else:
            from ..training.parallel import AcceleratedFlowNet, accelerated_net_options

            net_class, options = AcceleratedFlowNet, accelerated_net_options(self.accelerator, self.verbose)
        return net_class(
            module,
            criterion=NegativeLogLikelihood,
            optimizer=torch.optim.AdamW,
            optimizer__weight_decay=self.weight_decay,
            # one fused kernel per step instead of a dozen Python-level tensor ops per parameter
            optimizer__fused=torch.device(device).type in ("cpu", "cuda"),
            lr=settings["lr"],
            max_epochs=settings["max_epochs"],
            batch_size=settings["batch_size"],
            compile_module=self.compile,
            train_split=None if valid_set is None else predefined_split(valid_set),
            callbacks=callbacks,
            iterator_train=BatchIterator,
            iterator_train__shuffle=True,
            iterator_train__noise_width=self.standardizer_.noise_width,
            iterator_train__smoothing_std=self._smoothing_std(),
            iterator_train__context_noise=self._context_noise_per_feature(),
            iterator_train__context_dropout=self._context_dropout(),
            iterator_train__dequantization_noise=dequantized,
            iterator_train__missing_draws=MISSING_TRAIN_DRAWS,
            iterator_train__seed=seed,
            iterator_valid=BatchIterator,
            iterator_valid__dequantization_noise=dequantized,
            iterator_valid__missing_draws=MISSING_TRAIN_DRAWS,
            iterator_valid__seed=seed + 1,
            verbose=int(self.verbose),
            callbacks__print_log__keys_ignored=["valid_loss_members"],
            # skorch calls a sink of its own regardless of verbose: only set it when printing
            **({"callbacks__print_log__sink": plain_print} if self.verbose else {}),
            **options,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, context=None, sample_weight=None):
        """Fit the flow to X by maximum likelihood (forward KL), given labels or a context when passed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (images in the layouts the estimator accepts).
            Tabular densities take missing cells (NaN, in numbers and in
            categories): a row then trains on the importance-weighted
            likelihood of the cells it has (8 proposal draws of the missing
            ones per step, the MIWAE bound), and the flow starts at the
            Gaussian fitted to X by EM. A row with no observed cell is an
            error.
        y : array-like of shape (n_samples,), default=None
            Class labels. None fits ``p(x)``; labels fit ``p(x | y)``, and the
            estimator is then also a generative classifier.
        context : array-like or DataFrame of shape (n_samples, n_context_features), default=None
            Conditioning variables: the flow then models ``p(x | context)``
            (with ``y`` too, ``p(x | y, context)``). Numeric columns are
            standardised by ``context_scaler_``; a DataFrame's string,
            category and boolean columns become one indicator per category
            (``context_encoder_``). The result feeds every layer's
            conditioner; ``score_samples`` and ``sample`` then need a context.
            :class:`~skflow.FlowRegressor` is this path with ``x`` as the
            context of ``y``.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: the objective is the weighted mean
            log-likelihood (a weight of 2 counts a row twice, exactly, in the
            scaling, the class prior and the loss of a batch that holds it),
            and validation is weighted alike; a row of weight 0 is left out.
            None (or equal weights) is the plain fit.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        warm = self.warm_start and hasattr(self, "net_")
        Z, context, weight = self._prepare(X, y, context, sample_weight, reset=not warm)
        init_seed, loop_seed, train, valid = self._member_plan(self.random_state, len(Z))
        device = self._training_device()
        self.training_settings_ = self._settings(len(train))
        rows = lambda index: (Z[index], _take(context, index), _take(weight, index))
        proposal = self.proposal_
        valid_set = TensorDataset(*rows(valid), device=device, proposal=proposal) if len(valid) else None
        with torch.random.fork_rng(devices=[]):
            if warm:  # continue from the fitted weights
                module = copy.deepcopy(self.net_.module_).train()
            else:
                module = self._new_module(init_seed, Z[train], context)
            net = self._make_net(module, device, valid_set, loop_seed)
            net.fit(TensorDataset(*rows(train), device=device, proposal=proposal), None)
        self.net_ = net
        self.history_ = net.history
        self.n_iter_ = len(net.history)
        checked = train[: self._check_rows]
        self._check_trained(Z[checked], _take(context, checked), _take(weight, checked))
        self._scoring_module()  # build the scoring copy now: predicting must not change the estimator
        return self

    def _prepare(self, X, y, context, sample_weight, reset=True):
        """Validate X, labels, context and weights, fit the scaler: ``(Z, model context, weights or None)``.

        ``reset=False`` (a warm start) checks them against the fitted scaling, classes and context.
        """
        self._check_params()
        X = self._validate(X, reset=reset)
        weight = _check_weights(sample_weight, X)
        if reset:
            labels = self._encode_labels(y, len(X), weight)
        else:
            labels = self._fitted_labels(y, len(X))
        context = self._model_context(labels, self._scaled_context(context, len(X), reset=reset))
        if reset:
            observed = (~np.isnan(X)).sum(axis=0)
            if np.any(observed < 2):
                raise ValueError(
                    f"Column(s) {np.flatnonzero(observed < 2).tolist()} of X have fewer than 2 observed "
                    "(non-missing) values: a density cannot be fitted to them; drop those columns."
                )
            self.standardizer_ = self._make_scaler().fit(X, sample_weight=weight)
        Z = self.standardizer_.transform(X)
        if weight is not None and not np.all(weight > 0):  # a row of weight 0 is absent, as a frequency
            kept = weight > 0
            if kept.sum() < 2:
                raise ValueError("sample_weight must be positive for at least 2 rows.")
            Z, weight, context = Z[kept], weight[kept], None if context is None else context[kept]
        if reset:
            self.proposal_ = self._make_proposal().fit(Z) if self._missing else None
        return Z, context, weight

    def _make_proposal(self):
        """The proposal that fills missing cells (:class:`~skflow.data.missing.GaussianProposal`)."""
        cards = None if self.table_ is None else self.table_.cardinalities_
        return GaussianProposal(self.standardizer_.discrete_, cards)

    def _fitted_labels(self, y, n_samples):
        """One-hot labels of ``y`` among the fitted ``classes_`` (a warm start); None for a model without."""
        if (y is None) != (self.classes_ is None):
            raise ValueError("warm_start: pass class labels exactly when the model was fitted with them.")
        if y is None:
            return None
        y = column_or_1d(y, warn=True)
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} samples but y has {len(y)}.")
        return _one_hot(self._pick_labels(n_samples, y, None), len(self.classes_))

    def _member_plan(self, random_state, n_rows):
        """``(init_seed, loop_seed, train rows, validation rows)`` of one fit seeded by ``random_state``."""
        rng = check_random_state(random_state)
        init_seed, loop_seed = (int(s) for s in rng.randint(np.iinfo(np.int32).max - 1, size=2))
        return (init_seed, loop_seed, *_split_indices(n_rows, self.validation_fraction, rng))

    def _settings(self, n_train):
        return training_settings(n_train, self.batch_size, self.lr, self.max_epochs, self.patience)

    def _new_module(self, init_seed, Z_train, context):
        """A freshly initialised model (seeded by ``init_seed``), data-initialised on ``Z_train``."""
        torch.manual_seed(init_seed)
        module = self._build_module(Z_train.shape[1], 0 if context is None else context.shape[1])
        module.init_from_data(Z_train)
        if self._missing and np.isnan(Z_train).any():
            # start at the Gaussian fitted by EM (the proposal's): a flow that starts independent across
            # columns would impute little until it has learned their dependence, and small tables stop early
            module.start_at_gaussian(self.proposal_.mean_, self.proposal_.cov_)
        return module

    def _training_device(self):
        if self.accelerator is None:
            return resolve_device(self.device)
        from ..training.parallel import check_accelerator

        return check_accelerator(self.accelerator).device

    def _can_stack(self):
        """Whether seeded copies of this estimator can train as one stacked module (:meth:`_fit_members`)."""
        return (
            self._images == "never" and self.accelerator is None and not self.compile and not self.callbacks
        )

    def _fit_members(self, X, y, context, random_states, sample_weight=None):
        """Fitted copies of this estimator, one per entry of ``random_states``, trained as one module.

        The batched path of the ensemble engine
        (:func:`skflow.estimators.ensemble.fit_members`): X and the context
        are validated and scaled once; each copy gets the initialisation and
        validation split its ``random_state`` gives (as :meth:`fit` would),
        and all train together in one skorch loop
        (:mod:`skflow.training.stacked`), each with its own shuffles and early
        stopping. Returns the copies, each a complete fitted estimator. This
        estimator is left fitted with the shared data attributes only.
        """
        Z, context, weight = self._prepare(X, y, context, sample_weight)
        device = self._training_device()
        plans = [self._member_plan(random_state, len(Z)) for random_state in random_states]
        self.training_settings_ = self._settings(len(plans[0][2]))
        with torch.random.fork_rng(devices=[]):
            modules = [self._new_module(init_seed, Z[train], context) for init_seed, _, train, _ in plans]
        trains, valids = np.stack([plan[2] for plan in plans]), np.stack([plan[3] for plan in plans])
        member_valid = self._member_valid(Z, context, weight, valids, device, plans[0][1]) if valids.shape[1] else None
        stack = StackedMembers(modules)
        net = self._make_net(stack, device, None, plans[0][1], member_valid)
        with torch.random.fork_rng(devices=[]):
            dataset = TensorDataset(Z, context, weight, device=device, members=trains, proposal=self.proposal_)
            net.fit(dataset, None)
        stack.unstack(modules)
        fitted = {
            key: value for key, value in vars(self).items() if key.endswith("_") and not key.startswith("_")
        }
        stopper = [callback for _, callback in net.callbacks_ if isinstance(callback, MemberEarlyStopping)]
        epochs = stopper[0].stop_epoch_.tolist() if stopper else [len(net.history_)] * len(modules)
        members = []
        for random_state, module, train, n_epochs in zip(random_states, modules, trains, epochs):
            member = clone(self).set_params(random_state=random_state)
            vars(member).update(fitted)
            member.net_ = member._make_net(module.to(device), device, None, 0).initialize()
            member.net_.history_ = net.history_
            # the shared history; n_iter_ is the epoch at which this member stopped
            member.history_, member.n_iter_ = net.history_, int(n_epochs)
            rows = train[: self._check_rows]
            member._check_trained(Z[rows], _take(context, rows), _take(weight, rows))
            member._scoring_module()
            members.append(member)
        return members

    def _member_valid(self, Z, context, weight, valids, device, seed):
        """Stacked members' validation rows ``(x, context, weight, log_q)``, shaped ``(K, n_valid, ...)``;
        rows with missing cells are filled once, with ``MISSING_TRAIN_DRAWS`` fixed draws each."""
        tensor = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)
        x, context, weight = (tensor(_take(a, valids)) for a in (Z, context, weight))
        dataset = TensorDataset(Z[valids.ravel()], device=device, proposal=self.proposal_)
        if dataset.missing is None:
            return x, context, weight, None
        iterator = BatchIterator(dataset, len(dataset), missing_draws=MISSING_TRAIN_DRAWS, seed=seed + 1)
        batch, (_, log_q) = next(iter(iterator))
        draws, n_members = MISSING_TRAIN_DRAWS, len(valids)
        x = batch["x"].reshape(n_members, -1, Z.shape[1])
        if context is not None:
            context = context.repeat_interleave(draws, dim=1)
        return x, context, weight, log_q.reshape(n_members, -1, draws)

    def _check_trained(self, Z, context, weight=None):
        """Refuse to return a model that cannot score its own training data: non-finite log-densities,
        or a flow that, on the median complete training row, gives less density than the tail guard's
        wide Gaussian, or more than 1 nat per column less than the standard normal (in standardised
        units the best Gaussian with independent columns, and about where the flow starts). Either
        means a fit that diverged while its loss stayed finite, which the guard's floor would hide.
        With ``weight``, the median is that of the rows as the fit counts them."""
        advice = "Try a smaller `lr`, a `weight_decay` nearer its default, or a smaller model."
        if not np.all(np.isfinite(self._log_prob(Z, context, n_draws=1, exact=False))):
            raise FloatingPointError(
                f"The fitted flow gives non-finite log-densities on its own training data. {advice}"
            )
        complete, columns = ~np.isnan(Z).any(axis=1), ~self.standardizer_.discrete_
        if self._tail_weight == 0 or not complete.any() or not columns.any():
            return
        module, rows = self._module, Z[complete]
        noise = scoring_noise(rows, 1)[0] if module.needs_noise else None
        parts = lambda n, **batch: module.log_prob_parts(**batch)
        _, flow = batched(parts, len(rows), self._inference_batch, self._device(), torch.float32, x=rows,
                          context=_take(context, complete), noise=noise)
        z = rows[:, columns]
        guard = np.log(self._tail_weight) + _log_wide(z)
        normal = -0.5 * np.sum(z**2, axis=1) - 0.5 * z.shape[1] * np.log(2 * np.pi)
        median = lambda v: weighted_percentile(v, None if weight is None else weight[complete], 50.0)
        if not np.all(np.isfinite(flow)) or min(median(flow - guard), median(flow - normal) + z.shape[1]) < 0:
            raise FloatingPointError(
                "Training diverged: the fitted flow gives its own training rows far less density than a "
                f"standard normal does in its standardised units (median log-density {median(flow):.3g}, "
                f"against {median(normal):.3g}). {advice}"
            )

    # -------------------------------------------------------------- scoring
    @property
    def _module(self):
        module = self.net_.module_
        module.eval()
        return module

    def _scoring_module(self):
        """The module that scores, and its dtype: on the CPU a cached float64 copy.

        float32 kernels round differently for different batch sizes, so a
        row's float32 score could depend (in its 7th digit) on which rows it
        is scored with; in float64 it does not. On a GPU the float32 module
        scores (float64 is slow there).
        """
        module = self._module
        if self._device().type != "cpu":
            return module, torch.float32
        cached = self.__dict__.get("_module64")
        if cached is None or cached[0] is not module:
            cached = (module, copy.deepcopy(module).double().eval())
            self._module64 = cached
        return cached[1], torch.float64

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_module64", None)  # a cache, rebuilt on the first score
        return state

    def _device(self):
        return next(self.net_.module_.parameters()).device

    def _log_prob(self, Z, context=None, n_draws=None, exact=True):
        """``log p(z | context)`` per row in the flow's units, tail guard included; averaged in
        probability over ``n_score_draws`` dequantization draws (an importance-weighted bound) when
        dequantized; ``log P(d) + log p(c | d)`` for a mixed table. ``exact=False`` evaluates the
        trained float32 module instead of the float64 scoring copy (for the finiteness check)."""
        missing = np.isnan(Z).any(axis=1)
        if missing.any():
            log_joint = lambda filled, ctx: self._log_prob(filled, ctx, n_draws, exact)
            return self._marginal_log_prob(Z, context, log_joint)
        module, dtype = self._scoring_module() if exact else (self._module, torch.float32)
        device, size = self._device(), self._inference_batch
        parts = lambda n, **batch: module.log_prob_parts(**batch)
        columns = ~self.standardizer_.discrete_  # the tail guard acts on the continuous columns
        weight = self._tail_weight * columns.any()
        noises = scoring_noise(Z, n_draws or self.n_score_draws) if module.needs_noise else [None]
        draws = []
        for noise in noises:
            discrete, continuous = batched(
                parts, len(Z), size, device, dtype, x=Z, context=context, noise=noise
            )
            draws.append(discrete + _with_tail_guard(continuous, Z[:, columns], weight))
        return logsumexp(draws, axis=0) - np.log(len(draws))

    def _marginal_log_prob(self, Z, context, log_joint):
        """Log-density of rows ``Z`` with missing cells, given ``log_joint(complete rows, context)``: the
        importance-weighted estimate of the density of their observed cells, with
        ``MISSING_SCORE_DRAWS`` draws each from this estimator's proposal (complete rows exactly)."""
        out = np.empty(len(Z))
        missing = np.isnan(Z).any(axis=1)
        if (~missing).any():
            out[~missing] = log_joint(Z[~missing], _take(context, ~missing))
        for index, _, log_p, log_q in self._importance(Z, np.flatnonzero(missing), log_joint, context):
            out[index] = logsumexp(log_p - log_q, axis=1) - np.log(log_q.shape[1])
        return out

    def _importance(self, Z, rows, log_joint, context=None, draws=None, seed=0):
        """Yield ``(index, filled, log p, log q)`` for the rows ``rows`` of ``Z``, a chunk at a time.

        ``filled`` (chunk, draws, d) holds proposal fills of the rows' missing cells (in the flow's
        units), ``log p`` their joint log-density ``log_joint(filled rows, context)`` and ``log q``
        the proposal's (both (chunk, draws)): the importance weights of the cells' posterior.
        """
        draws = draws or MISSING_SCORE_DRAWS
        chunk = max(1, self._inference_batch // draws)
        for start in range(0, len(rows), chunk):
            index = rows[start : start + chunk]
            filled, log_q = self.proposal_.fill_rows(Z[index], draws, seed)
            ctx = None if context is None else np.repeat(context[index], draws, axis=0)
            log_p = log_joint(filled.reshape(-1, Z.shape[1]), ctx).reshape(len(index), draws)
            yield index, filled, log_p, log_q

    def _joint_log_likelihood(self, X, context=None):
        """``log pi_c + log p(x | c, context)`` per row and class, every Jacobian counted; (n, 1) without classes."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        context = self._scaled_context(context, len(X), reset=False)
        Z = self.standardizer_.transform(X)
        if self.classes_ is None:
            labels, log_prior = [None], np.zeros(1)
        else:
            n_classes = len(self.classes_)
            labels = [np.tile(_one_hot(c, n_classes), (len(Z), 1)) for c in range(n_classes)]
            log_prior = np.log(self.class_prior_)
        columns = [self._log_prob(Z, self._model_context(label, context)) for label in labels]
        return np.stack(columns, axis=1) + log_prior + self.standardizer_.log_det(Z)[:, None]

    def score_samples(self, X, *, context=None):
        """Log-density of each sample, in the units of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate, in the layout used in fit.
        context : array-like of shape (n_samples, n_context_features), default=None
            The context of each row, for a model fitted with one (then required).

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``log p(x)`` per row (``log p(x | context)`` given a context), float64,
            the scaling's log-determinant included; for a model fitted with
            class labels, the marginal ``log sum_c pi_c p(x | c)``. Tabular
            densities are the flow's mixed with a wide Gaussian of weight
            0.001 (in standardised units, scale 3), which keeps unseen values
            from getting absurdly low scores; likewise each categorical column
            of a mixed table keeps a share ``0.001 / (K + 1)`` of its
            probability (``K`` categories) for a category not seen in fit, so
            the seen combinations sum to slightly less than 1. For discrete values
            (``n_bins``) the importance-weighted lower bound of the
            log-probability. For a row with missing (NaN) cells (tabular
            densities), ``log p(observed cells)``, the scaling Jacobian of
            those cells only: estimated by importance sampling with 256
            proposal draws per row (``log mean_k p(x_o, x_m^k) / q(x_m^k |
            x_o)``, see :mod:`skflow.data.missing`), a consistent estimate
            whose expectation is a lower bound that tightens with the
            number of draws; the draws are seeded by the row's own values,
            so the score is deterministic.
        """
        return logsumexp(self._joint_log_likelihood(X, context), axis=1)

    def score(self, X, y=None, *, context=None):
        """Mean log-likelihood of X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.
        y : None
            Ignored: the score is the marginal log-likelihood of X.
        context : array-like of shape (n_samples, n_context_features), default=None
            For a model fitted with a context.

        Returns
        -------
        log_likelihood : float
            Mean of :meth:`score_samples`.
        """
        return float(np.mean(self.score_samples(X, context=context)))

    def log_conditionals(self, X, *, context=None):
        """The chain-rule terms ``log p(x_j | x_<j)`` of each row, one per column, in the units of X.

        For a density that is autoregressive in one column order (``MADEDensity``, or a
        ``MAFDensity`` / ``NSFDensity`` with ``n_transforms=1`` and a base that factorises), its
        log-density splits exactly into one term per column: column ``j``'s term is the log of its
        conditional density given the columns before it in the model's order (the natural column
        order unless ``order="random"``), its scaling Jacobian included. The first column's term
        is its marginal log-density; a column's term depends on which columns come before it, so
        another order gives other terms with the same sum. A flow of several layers mixes the
        orders of its layers and has no such split (a ``TypeError`` says so).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Complete rows (no NaN cells) to split, in the layout used in fit.
        context : array-like of shape (n_samples, n_context_features), default=None
            For a model fitted with a context.

        Returns
        -------
        terms : ndarray of shape (n_samples, n_features)
            Their sum over columns is the flow's ``log p(x)``; ``score_samples`` differs from it
            only by the tail guard's ``log((1 - w) + w q(x) / p(x))`` (about -0.001 nats on a
            typical row).
        """
        check_is_fitted(self)
        if self.table_ is not None or self.classes_ is not None:
            raise TypeError(
                "log_conditionals needs a numeric table fitted without class labels (the mixture over "
                "classes, and categorical columns, have no per-column split here)."
            )
        X = self._validate(X, reset=False)
        if np.isnan(X).any():
            raise ValueError("log_conditionals needs complete rows: X has missing (NaN) cells.")
        context = self._scaled_context(context, len(X), reset=False)
        Z = self.standardizer_.transform(X)
        module, dtype = self._scoring_module()
        terms = lambda n, **batch: module.log_prob_terms(**batch)
        log_terms = batched(terms, len(Z), self._inference_batch, self._device(), dtype, x=Z, context=context)
        return log_terms - np.log(self.standardizer_.scale_)

    @available_if(_is_conditional)
    def predict_proba(self, X, *, context=None):
        """Class posterior ``p(c | x)`` by Bayes' rule (fitted with ``y`` only).

        Parameters
        ----------
        X, context
            As in :meth:`score_samples`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return softmax(self._joint_log_likelihood(X, context), axis=1)

    @available_if(_is_conditional)
    def predict(self, X, *, context=None):
        """Most probable class of each sample: the argmax of :meth:`predict_proba` (same arguments).

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self._joint_log_likelihood(X, context), axis=1)]

    # ------------------------------------------------------------- sampling
    def sample(self, n_samples=1, random_state=None, *, y=None, context=None, return_y=False):
        """Draw samples from the fitted density.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw; None draws fresh randomness.
        y : label or array-like of shape (n_samples,), default=None
            Classes to sample (models fitted with labels only); None draws
            the classes from ``class_prior_``, i.e. samples the marginal.
        context : array-like or DataFrame of shape (n_samples, n_context_features), or one row
            The context of each draw; a single row (shape ``(n_context_features,)``
            or ``(1, n_context_features)``, a pandas Series or a one-row DataFrame)
            is used for every draw. For a model fitted with one (then required).
        return_y : bool, default=False
            Also return each sample's class label (models fitted with labels
            only), as :meth:`sklearn.mixture.GaussianMixture.sample` does.

        Returns
        -------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            Samples in the layout and units of the training data; a DataFrame
            with the training columns when fitted on one. Integer-valued
            columns (and ``n_bins`` pixels) come back as integers.
        y : ndarray of shape (n_samples,)
            The class of each sample; only with ``return_y=True``.
        """
        return self._sample(n_samples, random_state, y, context, return_y=return_y)

    def _sample(self, n_samples, random_state, y, context=None, return_y=False, **options):
        check_is_fitted(self)
        if return_y and self.classes_ is None:
            raise ValueError("return_y=True needs a model fitted with class labels (fit(X, y)).")
        if not (isinstance(n_samples, Integral) and n_samples >= 1):
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if context is not None and self.n_context_features_:
            context = _one_context_per_draw(context, n_samples)
        context = self._scaled_context(context, n_samples, reset=False)
        rng = check_random_state(random_state)
        picked = self._pick_labels(n_samples, y, rng)
        labels = None if picked is None else _one_hot(picked, len(self.classes_))
        model_context = self._model_context(labels, context)
        X = self._restore(self._conditional_sample(n_samples, model_context, rng, **options))
        return (X, self.classes_[picked]) if return_y else X

    def _conditional_sample(self, n_samples, context, rng, **options):
        """``n_samples`` rows in the user's units (not yet in the training layout), row i given ``context[i]``."""
        device = self._device()
        generator = torch.Generator(device=device).manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        module = self._module
        draw = lambda n, context=None: self._sample_scaled(module, n, context, generator, **options)
        Z = batched(draw, n_samples, self._inference_batch, device, context=context)
        if self._tail_weight > 0:  # rows drawn from the wide Gaussian of the tail guard
            wide = torch.rand(n_samples, generator=generator, device=device).cpu().numpy() < self._tail_weight
            noise = torch.randn(Z.shape, generator=generator, device=device).double().cpu().numpy()
            wide = wide[:, None] & ~self.standardizer_.discrete_[None, :]  # continuous columns only
            Z[wide] = TAIL_SCALE * noise[wide]
        return self.standardizer_.inverse_transform(Z)

    def _pick_labels(self, n_samples, y, rng):
        """Class indices to sample: ``y`` checked against ``classes_``, or drawn from the prior."""
        if self.classes_ is None:
            if y is not None:
                raise ValueError("y was given but the estimator was fitted without class labels.")
            return None
        if y is None:
            return rng.choice(len(self.classes_), size=n_samples, p=self.class_prior_)
        y = np.broadcast_to(np.asarray(y), (n_samples,))
        index = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        if np.any(self.classes_[index] != y):
            raise ValueError(f"y holds labels not seen in fit; known classes are {self.classes_}.")
        return index

    def _restore(self, X, index=None):
        """Rows in the user's units back to the layout (and integer type) of the training data: a
        DataFrame with the training columns and dtypes (rows labelled by ``index``) when fitted on one."""
        if self.table_ is not None:
            return self.table_.inverse_transform(X, index)
        if getattr(self, "n_bins", None) is not None:
            X = X.astype(np.int64)
        layout = self.layout_
        if layout is not None and layout.ndim != 2:
            return restore_layout(X, layout)
        if hasattr(self, "feature_names_in_"):
            return self.frame_.inverse_transform(X, index)
        return X
