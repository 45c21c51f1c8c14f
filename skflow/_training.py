"""The skorch training loop shared by every estimator.

skorch drives the epochs, callbacks, early stopping and history; skflow
plugs in through skorch's documented hooks only: a dataset of whole tensors,
a vectorised batch iterator (skorch's per-row DataLoader costs about 3x on
small tabular batches), the negative log-likelihood in ``get_loss``, and a
callback that keeps a diverging run from producing a broken model.
"""

import copy
import math

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback

__all__ = ["FlowNet", "TensorDataset", "BatchIterator", "NegativeLogLikelihood", "DivergenceGuard"]


class TensorDataset(torch.utils.data.Dataset):
    """Rows of one float tensor (the ``dataset`` of :class:`FlowNet`)."""

    def __init__(self, X, y=None, device="cpu", dtype=torch.float32):
        self.X = torch.as_tensor(X, dtype=dtype, device=device)
        self.y = None if y is None else torch.as_tensor(y, device=device)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], (None if self.y is None else self.y[i])


class BatchIterator:
    """Yield ``(X_batch, y_batch)`` by slicing whole tensors.

    Batches have near-equal sizes (never a stray batch of one row). In
    training, rows are shuffled each epoch and uniform dequantization noise
    ``U(-w/2, w/2)`` of per-feature width ``noise_width`` is added, then
    Gaussian noise of per-feature standard deviation ``smoothing_std``.

    Parameters
    ----------
    dataset : TensorDataset
    batch_size : int
    shuffle : bool, default=False
    noise_width : array-like of shape (n_features,), default=None
    seed : int, default=0
        Seeds the shuffling and noise; the generator is made on first use.
    smoothing_std : array-like of shape (n_features,), default=None
        Standard deviation of the Gaussian training noise per feature.
    """

    def __init__(self, dataset, batch_size, shuffle=False, noise_width=None, seed=0, smoothing_std=None):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.noise_width = self._per_feature(noise_width)
        self.smoothing_std = self._per_feature(smoothing_std)
        self.seed = seed
        self._generator = None

    def _per_feature(self, values):
        """``values`` as a tensor beside the data, or None when all are zero."""
        if values is None or not any(v > 0 for v in values):
            return None
        X = self.dataset.X
        return torch.as_tensor(values, dtype=X.dtype, device=X.device)

    def __len__(self):
        return -(-len(self.dataset) // self.batch_size)

    def _rng(self):
        if self._generator is None:
            self._generator = torch.Generator(device=self.dataset.X.device).manual_seed(self.seed)
        return self._generator

    def __iter__(self):
        X, y = self.dataset.X, self.dataset.y
        n = len(X)
        if self.shuffle:
            order = torch.randperm(n, generator=self._rng(), device=X.device)
            X = X[order]
            y = None if y is None else y[order]
        if self.noise_width is not None:
            u = torch.rand(X.shape, generator=self._rng(), device=X.device, dtype=X.dtype)
            X = X + (u - 0.5) * self.noise_width
        if self.smoothing_std is not None:
            X = X + torch.randn(X.shape, generator=self._rng(), device=X.device, dtype=X.dtype) * self.smoothing_std
        for idx in torch.arange(n, device=X.device).tensor_split(len(self)):
            lo, hi = int(idx[0]), int(idx[-1]) + 1
            yield X[lo:hi], (None if y is None else y[lo:hi])


class NegativeLogLikelihood(torch.nn.Module):
    """Mean negative log-likelihood of a batch of log-densities."""

    def forward(self, log_prob, y=None):
        return -log_prob.mean()


class FlowNet(NeuralNet):
    """A skorch ``NeuralNet`` whose module returns log-densities.

    The module's ``forward(X)`` (or ``forward(X, y)`` when labels are given)
    returns ``log p(x)`` per row; the loss is its negative mean.
    """

    def infer(self, x, **fit_params):
        return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true=None, X=None, training=False):
        return self.criterion_(y_pred)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        Xi, yi = batch
        kwargs = fit_params if yi is None else {**fit_params, "y": yi}
        y_pred = self.infer(Xi, **kwargs)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        Xi, yi = batch
        kwargs = fit_params if yi is None else {**fit_params, "y": yi}
        with torch.no_grad():
            y_pred = self.infer(Xi, **kwargs)
            loss = self.get_loss(y_pred, yi, X=Xi, training=False)
        return {"loss": loss, "y_pred": y_pred}


class DivergenceGuard(Callback):
    """Clip gradients; recover from non-finite losses or gradients, or fail with advice.

    Each batch's gradient is clipped to total norm ``max_norm``; a gradient
    that is not finite is zeroed instead (no NaN reaches the weights), and a
    batch whose loss is not finite is counted. At the end of an epoch that saw
    such a batch, or whose weights are no longer finite, the module and
    optimizer are restored to the last good epoch and the learning rate is
    halved. After ``max_restarts`` restorations, training stops with a
    ``FloatingPointError`` that says what to try.

    Parameters
    ----------
    max_norm : float, default=10.0
        Gradient clipping threshold (total 2-norm).
    max_restarts : int, default=5
        Restorations allowed before giving up.
    """

    def __init__(self, max_norm=10.0, max_restarts=5):
        self.max_norm = max_norm
        self.max_restarts = max_restarts

    def initialize(self):
        self.restarts_ = 0
        self.bad_batches_ = 0
        self._snapshot = None
        return self

    def _save(self, net):
        self._snapshot = (
            copy.deepcopy(net.module_.state_dict()),
            copy.deepcopy(net.optimizer_.state_dict()),
        )

    def on_train_begin(self, net, **kwargs):
        self.initialize()
        self._save(net)

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        if not training:
            return
        params = [p for _, p in named_parameters if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        if not torch.isfinite(norm):
            for p in params:
                p.grad.zero_()
            self.bad_batches_ += 1

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if training and loss is not None and not math.isfinite(loss.detach().item()):
            self.bad_batches_ += 1

    def on_epoch_end(self, net, **kwargs):
        finite = all(torch.isfinite(p).all() for p in net.module_.parameters())
        finite = finite and all(torch.isfinite(b).all() for b in net.module_.buffers() if b.is_floating_point())
        if finite and self.bad_batches_ == 0:
            self._save(net)
            return
        self.bad_batches_ = 0
        self.restarts_ += 1
        if self.restarts_ > self.max_restarts:
            raise FloatingPointError(
                "Training diverged: the loss or its gradient was not finite in "
                f"{self.restarts_} epochs, even after halving the learning rate each time. "
                "Try a smaller `lr`, a larger `weight_decay`, fewer `n_transforms`, or check "
                "X for extreme values or duplicated rows."
            )
        module_state, optimizer_state = self._snapshot
        net.module_.load_state_dict(module_state)
        net.optimizer_.load_state_dict(optimizer_state)
        for group in net.optimizer_.param_groups:
            group["lr"] *= 0.5
