"""skflow's own skorch callbacks: divergence recovery, the learning-rate schedule, a time limit."""

import copy
import time

import torch
from skorch.callbacks import Callback, LRScheduler
from torch.optim.lr_scheduler import CosineAnnealingLR

__all__ = ["DivergenceGuard", "TimeLimit", "lr_schedule"]


def lr_schedule(name, max_epochs):
    """The skorch callback of a named learning-rate schedule, or None for "constant".

    "cosine": the rate decays from ``lr`` to 0 over ``max_epochs`` along a
    half cosine, stepped once per epoch.
    """
    if name == "constant":
        return None
    return LRScheduler(CosineAnnealingLR, T_max=max_epochs, step_every="epoch")


class DivergenceGuard(Callback):
    """Clip gradients; recover from non-finite losses or gradients, or fail with advice.

    Each batch's gradient is clipped to total norm ``max_norm``; a gradient
    that is not finite is zeroed instead (no NaN reaches the weights), and a
    batch whose loss is not finite is counted. Both happen on the device,
    without a host sync: the count is read once per epoch. At the end of an
    epoch that saw such a batch, or whose weights are no longer finite, the
    module and optimizer are restored to the last good epoch and the learning
    rate is halved. After ``max_restarts`` restorations, training stops with
    a ``FloatingPointError`` that says what to try.

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
        self._bad = None
        self._snapshot = None
        return self

    def _save(self, net):
        self._snapshot = (_clone(net.module_.state_dict()), _clone(net.optimizer_.state_dict()))

    def _count(self, flag):
        self._bad = flag.int() if self._bad is None else self._bad + flag.int()

    def on_train_begin(self, net, **kwargs):
        self.initialize()
        self._save(net)
        self._params = [p for p in net.module_.parameters() if p.requires_grad]

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        if not training:
            return
        params = [p for p in self._params if p.grad is not None]
        if not params:
            return
        if hasattr(net.module_, "member_norms"):  # stacked members: each clipped on its own norm
            norm = net.module_.member_norms()
            factor = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)
            bad = ~torch.isfinite(norm)
            for p in params:
                shape = (-1,) + (1,) * (p.dim() - 1)
                p.grad.mul_(factor.view(shape)).masked_fill_(bad.view(shape), 0.0)
            self._count(bad.any())
            return
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        bad = ~torch.isfinite(norm)
        for p in params:
            p.grad.masked_fill_(bad, 0.0)
        self._count(bad)

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if training and loss is not None:
            self._count(~torch.isfinite(loss.detach()))

    def _healthy(self, net):
        """One host sync per epoch: no bad batch, and every weight and float buffer finite."""
        tensors = list(net.module_.parameters()) + [b for b in net.module_.buffers() if b.is_floating_point()]
        healthy = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if self._bad is not None:
            healthy = healthy & (self._bad == 0)
        self._bad = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # data-parallel training: every process restores, or none does
            flag = healthy.to(torch.int32).reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            healthy = flag[0] > 0
        return bool(healthy)

    def on_epoch_end(self, net, **kwargs):
        if self._healthy(net):
            self._save(net)
            return
        self.restarts_ += 1
        if self.restarts_ > self.max_restarts:
            raise FloatingPointError(
                "Training diverged: the loss or its gradient was not finite in "
                f"{self.restarts_} epochs, even after halving the learning rate each time. "
                "Try a smaller `lr`, a `weight_decay` nearer its default (1e-5: too large a decay "
                "also diverges), fewer `n_transforms`, or check X for extreme values or duplicated rows."
            )
        module_state, optimizer_state = self._snapshot
        net.module_.load_state_dict(module_state)
        net.optimizer_.load_state_dict(optimizer_state)
        for group in net.optimizer_.param_groups:
            group["lr"] *= 0.5


def _clone(state):
    """A copy of a (nested) state dict whose tensors are cloned: what ``copy.deepcopy`` gives, several
    times faster, since the snapshot is taken after every epoch."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        copied = type(state)((key, _clone(value)) for key, value in state.items())
        if hasattr(state, "_metadata"):  # a module's state dict: its version information
            copied._metadata = state._metadata
        return copied
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(value) for value in state)
    return copy.copy(state)


class TimeLimit(Callback):
    """End training after the first epoch that finishes ``seconds`` after training began.

    Pass it in an estimator's ``callbacks`` to fit within a wall-clock
    budget. Training ends as at the last epoch: with early stopping, the best
    weights are restored. ``stopped_`` says whether the limit ended the fit.

    Parameters
    ----------
    seconds : float
        Wall-clock budget of the training loop.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import MAFDensity
    >>> from skflow.training import TimeLimit
    >>> limit = TimeLimit(0.0)
    >>> model = MAFDensity(n_transforms=1, max_epochs=50, callbacks=[limit], random_state=0)
    >>> model = model.fit(np.random.default_rng(0).normal(size=(200, 2)))
    >>> limit.stopped_, model.n_iter_
    (True, 1)
    """

    def __init__(self, seconds):
        self.seconds = seconds

    def on_train_begin(self, net, **kwargs):
        self.start_, self.stopped_ = time.perf_counter(), False

    def on_epoch_end(self, net, **kwargs):
        if time.perf_counter() - self.start_ >= self.seconds:
            self.stopped_ = True
            raise KeyboardInterrupt  # skorch ends the fit as after its last epoch (on_train_end runs)
