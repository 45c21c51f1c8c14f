"""Image input handling shared by skflow's image density estimators.

Layouts: ``(n, C, H, W)``, ``(n, H, W)`` (one channel) and flat
``(n, C*H*W)`` with ``image_shape=(C, H, W)``. Estimators model
``(n, C, H, W)`` tensors and give samples back in the layout ``fit`` saw.

Units: with ``n_bins`` the data are integers in ``[0, n_bins)``; the model is
a density over dequantized pixels ``y = (x + u) / n_bins`` in ``(0, 1)``
(through a logit unless ``logit_alpha=None``), and ``score_samples`` is the
lower bound ``log p(y) - log q(y | x)`` of ``log P(x)`` in nats, averaged in
probability over ``n_score_draws`` draws of ``u`` (an importance-weighted
bound). Without ``n_bins`` the pixels are continuous, standardised by one
global mean and scale whose Jacobian is counted.

Public pieces: :func:`check_images`, :func:`restore_layout`,
:func:`check_pixels`, :func:`bits_per_dim`, :func:`dequantization_noise`,
:func:`uniform_dequantized_score_samples`, the module
:class:`DequantizedImageFlow` and the estimator base :class:`ImageFlowDensity`
(subclasses implement ``__init__`` and ``_build_image_flow(image_shape)``).
"""

import hashlib
import math
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._image_layout import ImageLayout, _resolve_shape, check_images, check_pixels, restore_layout
from .base import FlowDensity
from .dequantization import UniformDequantization, VariationalDequantization
from .transforms import Compose
from .transforms.image import Logit

__all__ = [
    "DequantizedImageFlow",
    "ImageFlowDensity",
    "ImageLayout",
    "bits_per_dim",
    "check_images",
    "check_pixels",
    "dequantization_noise",
    "restore_layout",
    "uniform_dequantized_score_samples",
]

#: Images per forward pass when scoring (conv activations are large).
IMAGE_BATCH = 512
#: Training images re-scored after fit to check the model is finite.
CHECK_ROWS = 256

def bits_per_dim(estimator, X):
    """Mean negative log-likelihood of X in bits per dimension.

    ``-mean(estimator.score_samples(X)) / (D log 2)`` with ``D`` the number of
    values per image (``C*H*W``, whatever X's layout). For an estimator fitted
    with ``n_bins`` this is the bits per dimension of the discrete images.

    Parameters
    ----------
    estimator : fitted estimator with ``score_samples``
    X : array-like of shape (n_samples, ...)

    Returns
    -------
    bits : float

    Examples
    --------
    >>> import numpy as np
    >>> class Uniform:
    ...     def score_samples(self, X):
    ...         return np.full(len(X), -64 * np.log(17))
    >>> round(bits_per_dim(Uniform(), np.zeros((3, 8, 8))), 4)  # log2(17)
    4.0875
    """
    n_dims = int(np.prod(np.shape(X)[1:]))
    return float(-np.mean(estimator.score_samples(X)) / (n_dims * math.log(2)))


def dequantization_noise(X, n_draws=1, seed=0):
    """Uniform noise in ``[0, 1)`` of shape ``(n_draws, *X.shape)``, a function of each row.

    Row ``i``'s noise is seeded by a hash of its values and ``seed``, so a
    score does not depend on which other rows are scored with it.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    noise = np.empty((n_draws, *X.shape))
    for i, row in enumerate(X):
        key = int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        noise[:, i] = np.random.default_rng([key, seed]).random((n_draws, *row.shape))
    return noise


def uniform_dequantized_score_samples(score_samples, X, n_bins, n_draws=1, seed=0):
    """``log P(x)`` bound of a density fitted on uniformly dequantized pixels ``x + u``.

    For a density ``p`` over ``x + u`` (pixel units, ``u`` in ``[0, 1)``),
    ``log P(x) >= log mean_k p(x + u_k)`` in expectation (importance weighting
    with the uniform proposal). This is the bookkeeping of the image
    estimators applied to any ``score_samples``, e.g. a GaussianMixture.

    Parameters
    ----------
    score_samples : callable
        Maps an array like X to log-densities per row.
    X : ndarray of shape (n_samples, n_features)
        Integer pixels in ``[0, n_bins)``.
    n_bins : int
    n_draws : int, default=1
    seed : int, default=0

    Returns
    -------
    log_prob : ndarray of shape (n_samples,)
    """
    X = np.asarray(X, dtype=np.float64)
    check_pixels(X, n_bins)
    noise = dequantization_noise(X, n_draws, seed)
    draws = np.stack([score_samples(X + u) for u in noise])
    return logsumexp(draws, axis=0) - math.log(n_draws)


class DequantizedImageFlow(nn.Module):
    """Log-density of flat rows of images: dequantize, logit, flow, base.

    ``forward(x, noise=None)`` takes ``(n, C*H*W)`` rows (integers in
    ``[0, n_bins)`` with ``n_bins``, else continuous values) and returns
    ``log p(y) - log q(y | x)`` per row; missing noise is drawn from torch's
    global generator. ``sample`` returns flat rows in the same units.

    Parameters
    ----------
    flow : skflow.flows.Flow
        Density over ``(n, C, H, W)`` tensors of logit-space pixels.
    image_shape : tuple of int
    n_bins : int or None
    dequantizer : torch.nn.Module or None
        Maps ``(x, noise)`` to ``(y, log q(y | x))``; needed with ``n_bins``.
    logit_alpha : float or None, default=0.05
        With ``n_bins``: pixels go through :class:`~skflow.transforms.image.Logit`
        with this ``alpha``; None centres them (``y - 0.5``) instead.
    """

    def __init__(self, flow, image_shape, n_bins=None, dequantizer=None, logit_alpha=0.05):
        super().__init__()
        self.flow, self.image_shape, self.n_bins = flow, tuple(image_shape), n_bins
        self.dequantizer = dequantizer
        self.pixels = Logit(logit_alpha) if (n_bins and logit_alpha is not None) else Compose()
        self.centre = 0.5 if (n_bins and logit_alpha is None) else 0.0

    def forward(self, x, noise=None):
        return self.log_prob(x, noise)

    def log_prob(self, x, noise=None):
        x = x.reshape(len(x), *self.image_shape)
        log_q = 0.0
        if self.n_bins:
            noise = torch.rand_like(x) if noise is None else noise.reshape(x.shape)
            x, log_q = self.dequantizer(x, noise)
        z, ladj = self.pixels(x - self.centre)
        return self.flow.log_prob(z) + ladj - log_q

    def sample(self, n_samples, generator=None):
        z = self.flow.sample(n_samples, generator)
        y = self.pixels.inverse(z)[0] + self.centre
        if self.n_bins:
            y = torch.floor(y * self.n_bins).clamp(0, self.n_bins - 1)
        return y.reshape(n_samples, -1)


class _PixelScaler:
    """One global centring and scaling of continuous pixels (identity for discrete ones)."""

    noise_width = None  # dequantization happens inside DequantizedImageFlow

    def fit(self, X, n_bins):
        self.mean_, self.scale_ = 0.0, 1.0
        if not n_bins:
            self.mean_, self.scale_ = float(X.mean()), float(X.std()) or 1.0
        self.log_det_ = -X.shape[1] * math.log(self.scale_)
        return self

    def transform(self, X):
        return (X - self.mean_) / self.scale_

    def inverse_transform(self, Z):
        return Z * self.scale_ + self.mean_


_DEQUANTIZERS = {
    "uniform": lambda est, shape: UniformDequantization(est.n_bins),
    "variational": lambda est, shape: VariationalDequantization(est.n_bins, shape),
}

IMAGE_DOC = """
    image_shape : tuple of int, default=None
        ``(C, H, W)`` or ``(H, W)``; needed when X is flat ``(n, C*H*W)``
        (e.g. in a Pipeline), otherwise read from X of shape ``(n, C, H, W)``
        or ``(n, H, W)``.
    n_bins : int, default=None
        The pixels are integers in ``[0, n_bins)`` (256 for 8-bit images, 17
        for scikit-learn's digits): they are dequantized, ``score_samples``
        is a lower bound of the log-probability of the discrete image (nats)
        and samples are integers. None: continuous pixels.
    dequantization : {"uniform", "variational"}, default="uniform"
        Uniform noise in each cell, or a conditional flow ``q(u | x)`` trained
        jointly (Flow++); used with ``n_bins``.
    logit_alpha : float or None, default=0.05
        Discrete pixels ``y`` in ``(0, 1)`` are modelled in logit space,
        ``logit(alpha + (1 - 2 alpha) y)``; None models ``y - 0.5``.
    n_score_draws : int, default=4
        Dequantization draws per image in ``score_samples`` (combined as an
        importance-weighted bound; seeded by each image's values, so scores
        are deterministic)."""


class ImageFlowDensity(FlowDensity):
    """Base class of the image density estimators. Not used directly.

    Reuses :class:`~skflow.base.FlowDensity`'s training loop on flat rows;
    subclasses implement ``__init__`` and ``_build_image_flow(image_shape)``
    returning a :class:`~skflow.flows.Flow` over ``(n, C, H, W)`` tensors.
    """

    _tail_weight = 0.0  # image scores are dequantization bounds; no tail mixture


    _parameter_constraints = {
        **{
            k: v
            for k, v in FlowDensity._parameter_constraints.items()
            if k not in ("hidden_features", "dequantize")
        },
        "image_shape": [tuple, list, None],
        "n_bins": [Interval(Integral, 2, None, closed="left"), None],
        "dequantization": [StrOptions(set(_DEQUANTIZERS))],
        "logit_alpha": [Interval(Real, 0, 0.5, closed="neither"), None],
        "n_score_draws": [Interval(Integral, 1, None, closed="left")],
    }

    def _build_image_flow(self, image_shape):
        """Return the flow over ``(n, C, H, W)`` tensors (defined by subclasses)."""
        raise TypeError(f"{type(self).__name__} does not define _build_image_flow; use a concrete estimator.")

    def _check_hidden_features(self):
        """Image flows have no ``hidden_features``; nothing to check."""

    def _validate_images(self, X, reset):
        ensure = 2 if reset else 1
        if getattr(X, "ndim", np.ndim(X)) == 2:
            flat = validate_data(self, X, dtype=np.float64, reset=reset, ensure_min_samples=ensure)
            images, layout = check_images(flat, self.image_shape_ if not reset else self.image_shape)
        else:
            images, layout = check_images(X, None if reset else self.image_shape_, ensure_min_samples=ensure)
            if (
                reset
                and self.image_shape is not None
                and _resolve_shape(self.image_shape) != layout.image_shape
            ):
                raise ValueError(
                    f"X has images of shape {layout.image_shape}, but image_shape is {self.image_shape}."
                )
            flat = validate_data(
                self, images.reshape(len(images), -1), reset=reset, ensure_min_samples=ensure
            )
        if self.n_bins:
            check_pixels(flat, self.n_bins)
        return flat, layout

    def _prepare(self, X):
        flat, layout = self._validate_images(X, reset=True)
        self.image_shape_, self.layout_ = layout.image_shape, layout
        self.standardizer_ = _PixelScaler().fit(flat, self.n_bins)
        return self.standardizer_.transform(flat)

    def _build_flow(self, n_features):
        dequantizer = _DEQUANTIZERS[self.dequantization](self, self.image_shape_) if self.n_bins else None
        flow = self._build_image_flow(self.image_shape_)
        return DequantizedImageFlow(flow, self.image_shape_, self.n_bins, dequantizer, self.logit_alpha)

    @torch.no_grad()
    def _log_prob(self, Z):
        module, device = self._module, self._device()
        n_draws = self.n_score_draws if self.n_bins else 1
        out = np.empty(len(Z))
        for start in range(0, len(Z), IMAGE_BATCH):
            rows = Z[start : start + IMAGE_BATCH]
            batch = torch.as_tensor(rows, dtype=torch.float32, device=device)
            noise = dequantization_noise(rows, n_draws) if self.n_bins else [None]
            draws = [
                module.log_prob(
                    batch, None if u is None else torch.as_tensor(u, dtype=torch.float32, device=device)
                )
                .double()
                .cpu()
                .numpy()
                for u in noise
            ]
            out[start : start + len(rows)] = logsumexp(np.stack(draws), axis=0) - math.log(len(draws))
        return out

    def _check_trained(self, Z):
        super()._check_trained(Z[:CHECK_ROWS])

    def score_samples(self, X):
        """Log-probability of each image (a lower bound for discrete pixels), in nats.

        Parameters
        ----------
        X : array-like of shape (n, C, H, W), (n, H, W) or (n, C*H*W)
            Images in any layout the estimator accepts.

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
            With ``n_bins``, ``log P(x)`` of the discrete image (bounded from
            below); otherwise ``log p(x)`` in the units of X, the
            standardisation's Jacobian included.
        """
        check_is_fitted(self)
        flat, _ = self._validate_images(X, reset=False)
        return self._log_prob(self.standardizer_.transform(flat)) + self.standardizer_.log_det_

    def _wrap_output(self, X):
        images = X.reshape(len(X), *self.image_shape_)
        if self.n_bins:
            images = images.astype(np.int64)
        out = restore_layout(images, self.layout_)
        if self.layout_.ndim == 2:
            return super()._wrap_output(out)
        return out
