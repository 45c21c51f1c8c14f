"""Pieces of :class:`skflow.tarflow.TarFlowDensity`: its training batches, pixel scaling and denoising."""

import numpy as np
import torch

from ._training import BatchIterator

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
