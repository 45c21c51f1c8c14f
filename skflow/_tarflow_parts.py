"""Pieces of :class:`skflow.tarflow.TarFlowDensity`: data layout, training batches, pixel
scaling, class-wise scoring, sampling and denoising."""

import numpy as np
import torch
from sklearn.utils.validation import column_or_1d, validate_data
from skorch.callbacks import LRScheduler
from skorch.helper import predefined_split
from torch.optim.lr_scheduler import CosineAnnealingLR

from ._image import _PixelScaler, check_images, check_pixels, restore_layout
from ._preprocessing import Standardizer
from ._training import BatchIterator, TensorDataset
from .base import INFERENCE_BATCH, resolve_device

#: Probability that a training label is replaced by the null class (classifier-free guidance).
LABEL_DROPOUT = 0.1


class _AugmentedBatchIterator(BatchIterator):
    """Training batches with Gaussian noise on X and label dropout on y."""

    def __init__(
        self, dataset, batch_size, shuffle=False, noise_width=None, seed=0, noise_std=0.0, null_label=None
    ):
        super().__init__(dataset, batch_size, shuffle, noise_width, seed)
        self.noise_std, self.null_label = noise_std, null_label

    def __iter__(self):
        for X, y in super().__iter__():
            if self.noise_std > 0:
                X = X + self.noise_std * torch.randn(
                    X.shape, generator=self._rng(), device=X.device, dtype=X.dtype
                )
            if y is not None and self.null_label is not None:
                drop = torch.rand(y.shape, generator=self._rng(), device=y.device) < LABEL_DROPOUT
                y = torch.where(drop, torch.full_like(y, self.null_label), y)
            yield X, y


class _BinScaler:
    """Integers in ``[0, n_bins)`` to ``[-1, 1]``: ``z = (x + 1/2) * 2 / n_bins - 1``.

    Same interface as :class:`skflow._preprocessing.Standardizer`; the bin
    ``[k, k + 1)`` maps to a cell of width ``2 / n_bins``.
    """

    def __init__(self, n_bins):
        self.n_bins = n_bins

    def fit(self, X):
        self.log_det_ = X.shape[1] * float(np.log(2.0 / self.n_bins))
        self.noise_width = np.full(X.shape[1], 2.0 / self.n_bins)
        return self

    def transform(self, X):
        return (X + 0.5) * (2.0 / self.n_bins) - 1.0

    def inverse_transform(self, Z):
        return np.clip(np.floor((Z + 1.0) * (self.n_bins / 2.0)), 0, self.n_bins - 1)


def _tweedie_step(module, x, y, guidance, sigma):
    """``x + sigma^2 * grad log p(x)`` (guided score when ``guidance != 0``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_prob = module.log_prob(x, y)
        if guidance != 0 and y is not None:
            log_prob = (1 + guidance) * log_prob - guidance * module.log_prob(x, None)
        (score,) = torch.autograd.grad(log_prob.sum(), x)
    return (x + sigma**2 * score).detach()


def _is_conditional(estimator):
    """Whether the estimator was fitted with class labels (gates ``predict`` and ``predict_proba``)."""
    return getattr(estimator, "classes_", None) is not None


def _check_rows(estimator, X, reset):
    """Validate X in any layout the estimator accepts; return flat float64 rows.

    With ``reset`` (in ``fit``) also sets ``layout_`` and ``image_shape_``.
    """
    ensure = 2 if reset else 1
    image_shape = estimator.image_shape if reset else estimator.image_shape_
    layout = None
    if not hasattr(X, "iloc") and np.ndim(X) in (3, 4):
        images, layout = check_images(X, image_shape, ensure_min_samples=ensure)
        X = images.reshape(len(images), -1)
    X = validate_data(estimator, X, dtype=np.float64, reset=reset, ensure_min_samples=ensure)
    if layout is None and image_shape is not None:
        layout = check_images(X, image_shape)[1]
    if reset:
        estimator.layout_ = layout
        estimator.image_shape_ = None if layout is None else layout.image_shape
    if estimator.n_bins is not None:
        check_pixels(X, estimator.n_bins)
    return X


def _restore_rows(estimator, X):
    """Flat rows back to the layout (and integer type) of the estimator's training data."""
    if estimator.n_bins is not None:
        X = X.astype(np.int64)
    if estimator.layout_ is None or estimator.layout_.ndim == 2:
        return estimator._wrap_output(X)
    return restore_layout(X.reshape(len(X), *estimator.image_shape_), estimator.layout_)


@torch.no_grad()
def _class_log_prob(module, Z, n_classes, device):
    """``log p(z | c)`` per row and class, shape (n, n_classes); (n, 1) when ``n_classes`` is None."""
    out = np.empty((len(Z), n_classes or 1))
    for start in range(0, len(Z), INFERENCE_BATCH):
        batch = torch.as_tensor(Z[start : start + INFERENCE_BATCH], dtype=torch.float32, device=device)
        for c in range(n_classes or 1):
            labels = None if n_classes is None else torch.full((len(batch),), c, device=device)
            out[start : start + len(batch), c] = module.log_prob(batch, labels).double().cpu().numpy()
    return out


def _pick_labels(classes, class_prior, n_samples, y, rng):
    """Class indices to sample: ``y`` checked against ``classes``, or drawn from the prior."""
    if classes is None:
        if y is not None:
            raise ValueError("y was given but the estimator was fitted without class labels.")
        return None
    if y is None:
        return rng.choice(len(classes), size=n_samples, p=class_prior)
    y = np.broadcast_to(np.asarray(y), (n_samples,))
    index = np.searchsorted(classes, y).clip(0, len(classes) - 1)
    if np.any(classes[index] != y):
        raise ValueError(f"y holds labels not seen in fit; known classes are {classes}.")
    return index


def _draw_rows(module, device, n_samples, seed, labels=None, guidance=0.0, sigma=0.0):
    """Sample flat rows in the flow's units; one Tweedie step of noise ``sigma`` when > 0."""
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for start in range(0, n_samples, INFERENCE_BATCH):
        n = min(INFERENCE_BATCH, n_samples - start)
        y = None if labels is None else torch.as_tensor(labels[start : start + n], device=device)
        with torch.no_grad():
            x = module.sample(n, generator, y, guidance)
        if sigma > 0:
            x = _tweedie_step(module, x, y, guidance, sigma)
        chunks.append(x.double().cpu().numpy())
    return np.concatenate(chunks)


def _fit_scaler(estimator, X):
    """The affine map from X to the flow's units: bins to ``[-1, 1]``, images globally, columns each."""
    if estimator.n_bins is not None:
        return _BinScaler(estimator.n_bins).fit(X)
    if estimator.image_shape_ is not None:
        return _PixelScaler().fit(X, None)  # one global mean and scale
    return Standardizer(estimator.dequantize).fit(X)


def _encode_labels(y, n_samples):
    """``(classes, class_prior, label indices)``; three None when ``y`` is None."""
    if y is None:
        return None, None, None
    y = column_or_1d(y, warn=True)
    if len(y) != n_samples:
        raise ValueError(f"X has {n_samples} samples but y has {len(y)}.")
    classes, labels = np.unique(y, return_inverse=True)
    return classes, np.bincount(labels) / len(labels), labels


def _fit_net(estimator, module, Z, labels, train, valid, seed):
    """Train ``module`` on the rows ``Z[train]`` (early stopping on ``Z[valid]``); return the net.

    The estimator's skorch net, with noise-augmented batches, label dropout
    for a conditional module and the learning-rate schedule.
    """
    device = resolve_device(estimator.device)
    valid_data = Z[valid] if len(valid) else None
    net = estimator._make_net(module, device, estimator.standardizer_.noise_width, valid_data, seed)
    if len(valid) and labels is not None:
        net.set_params(train_split=predefined_split(TensorDataset(valid_data, labels[valid], device=device)))
    net.set_params(
        iterator_train=_AugmentedBatchIterator,
        iterator_train__noise_std=estimator.noise_std,
        iterator_train__null_label=None if labels is None else int(labels.max()) + 1,
    )
    if estimator.lr_schedule == "cosine":
        schedule = LRScheduler(CosineAnnealingLR, T_max=estimator.max_epochs, step_every="epoch")
        net.callbacks.append(("lr_schedule", schedule))
    return net.fit(Z[train], None if labels is None else labels[train])
