"""The skorch network every estimator trains through, and its data pipeline.

skorch drives the epochs, callbacks, early stopping and history; skflow
plugs in through skorch's documented hooks only: a dataset of whole tensors,
a vectorised batch iterator (skorch's per-row DataLoader costs about 3x on
small tabular batches), and the negative log-likelihood in ``get_loss``.
Batches are dicts of the module's keyword arguments (``x``, and ``context``
and ``noise`` when the model takes them), so one loop serves every flow.
"""

import torch
from skorch import NeuralNet

__all__ = ["BatchIterator", "FlowNet", "NegativeLogLikelihood", "TensorDataset"]


class TensorDataset(torch.utils.data.Dataset):
    """Rows of a float tensor ``x`` and, optionally, of a context tensor, on one device.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
    context : array-like of shape (n_samples, context_features), default=None
    device : str or torch.device, default="cpu"
    """

    def __init__(self, x, context=None, device="cpu", dtype=torch.float32):
        self.x = torch.as_tensor(x, dtype=dtype, device=device)
        self.context = None if context is None else torch.as_tensor(context, dtype=dtype, device=device)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        item = {"x": self.x[i]}
        if self.context is not None:
            item["context"] = self.context[i]
        return item, torch.zeros(())


class BatchIterator:
    """Yield ``(batch, None)`` with ``batch`` a dict of tensors, by slicing whole tensors.

    Batches have near-equal sizes (never a stray batch of one row); their
    boundaries are computed on the host, so iterating costs no device sync.
    Every random draw comes from one ``torch.Generator`` seeded by ``seed``
    and made on the data's device. In training (``shuffle=True``) rows are
    shuffled each epoch and the training noise is added:

    - uniform noise ``U(-w/2, w/2)`` of per-feature width ``noise_width``
      (dequantization of integer columns);
    - Gaussian noise of per-feature standard deviation ``smoothing_std``
      (point-mass smoothing, TarFlow's noise augmentation);
    - with ``context_dropout``, each row's context is replaced by zeros (the
      null context of classifier-free guidance) with that probability.

    With ``dequantization_noise`` the batch also carries ``noise``, uniform in
    ``[0, 1)`` and shaped like ``x``, for a dequantizer inside the model.
    Without shuffling (validation) the generator restarts from ``seed`` each
    epoch, so every epoch is scored on the same noise.

    Parameters
    ----------
    dataset : TensorDataset
    batch_size : int
    shuffle : bool, default=False
    noise_width : array-like of shape (n_features,), default=None
    smoothing_std : array-like of shape (n_features,), default=None
    context_dropout : float, default=0.0
    dequantization_noise : bool, default=False
    seed : int, default=0
    """

    def __init__(
        self,
        dataset,
        batch_size,
        shuffle=False,
        noise_width=None,
        smoothing_std=None,
        context_dropout=0.0,
        dequantization_noise=False,
        seed=0,
    ):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.noise_width = self._per_feature(noise_width)
        self.smoothing_std = self._per_feature(smoothing_std)
        self.context_dropout = context_dropout
        self.dequantization_noise = dequantization_noise
        self.seed = seed
        self._generator = None

    def _per_feature(self, values):
        """``values`` as a tensor beside the data, or None when all are zero."""
        if values is None or not any(v > 0 for v in values):
            return None
        x = self.dataset.x
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)

    def __len__(self):
        return max(1, -(-len(self.dataset) // self.batch_size))

    def _rng(self):
        if self._generator is None or not self.shuffle:
            self._generator = torch.Generator(device=self.dataset.x.device).manual_seed(self.seed)
        return self._generator

    def _noisy(self, x, rng):
        if self.noise_width is not None:
            u = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
            x = x + (u - 0.5) * self.noise_width
        if self.smoothing_std is not None:
            x = x + torch.randn(x.shape, generator=rng, device=x.device, dtype=x.dtype) * self.smoothing_std
        return x

    def __iter__(self):
        rng = self._rng()
        x, context = self.dataset.x, self.dataset.context
        n = len(x)
        if self.shuffle:
            order = torch.randperm(n, generator=rng, device=x.device)
            x = self._noisy(x[order], rng)
            context = None if context is None else context[order]
            if context is not None and self.context_dropout > 0:
                keep = torch.rand(n, 1, generator=rng, device=x.device) >= self.context_dropout
                context = context * keep
        batch = {"x": x}
        if context is not None:
            batch["context"] = context
        if self.dequantization_noise:
            batch["noise"] = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        sizes = _split_sizes(n, len(self))
        start = 0
        for size in sizes:
            yield {key: value[start : start + size] for key, value in batch.items()}, None
            start += size


def _split_sizes(n, n_batches):
    """Sizes of ``n_batches`` near-equal consecutive batches of ``n`` rows."""
    base, extra = divmod(n, n_batches)
    return [base + 1] * extra + [base] * (n_batches - extra)


class NegativeLogLikelihood(torch.nn.Module):
    """Mean negative log-likelihood of a batch of log-densities."""

    def forward(self, log_prob, y=None):
        return -log_prob.mean()


class FlowNet(NeuralNet):
    """A skorch ``NeuralNet`` whose module returns log-densities.

    The module is called with the batch's keyword arguments (``x``, and
    ``context`` or ``noise`` when present) and returns ``log p(x)`` per row;
    the loss is its negative mean.

    One host-device synchronisation per batch remains, inside skorch: its
    epoch loop records each batch's loss in the history with ``.item()``.
    skflow's own code adds none (see :class:`~skflow.training.callbacks.DivergenceGuard`).
    """

    def infer(self, x, **fit_params):
        return self.module_(**x, **fit_params)

    def get_loss(self, y_pred, y_true=None, X=None, training=False):
        return self.criterion_(y_pred)
