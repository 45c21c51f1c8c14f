"""Seeded copies of one model trained as one module: weights stacked over a member axis.

A small flow spends most of a training step in per-operation overhead, not
arithmetic, so fitting ``K`` copies one after another costs ``K`` times one
fit. :class:`StackedMembers` holds the ``K`` copies' weights as tensors with
a leading member axis and evaluates all of them in one call: each layer runs
once, on every member's rows. When the only weights of the model are those of
masked linear layers (MAF, NSF and MADE with a fixed base, the default
regressor's flows), the members' rows are laid end to end and go through the
model as one batch, every masked layer doing one batched matrix product
(:class:`~skflow.transforms.autoregressive.MaskedLinear`); any other model is
evaluated with ``torch.func.vmap`` over ``functional_call``, which gives the
same values at a higher cost per step. Every member keeps its own
initialisation, its own rows (a member axis on the data too) and, through
:class:`MemberEarlyStopping`, its own early stopping; the members share only
the optimizer's step count and the learning-rate schedule. The loss is the
sum of the members' mean negative log-likelihoods, so each member's gradient
is exactly the one it would get alone.
"""

import copy
import math

import torch
from skorch.callbacks import Callback
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..data.missing import importance_reduce
from ..models.distributions import CategoricalMADE, MADEMixture, StandardNormal
from ..models.flow import Flow, MixedFlow
from ..transforms.autoregressive import MADE, MaskedAffineAutoregressive, MaskedAutoregressive, MaskedLinear
from ..transforms.core import Compose, Inverse
from ..transforms.splines import RationalQuadraticSpline
from ..transforms.univariate import Affine

__all__ = ["MemberEarlyStopping", "StackedMembers"]

#: Module types that compute each row on its own, hold weights only in masked linear layers and
#: buffers that never change: models built of these alone take the batched-matrix path. Exact
#: types: a subclass may add weights (``DiagonalNormal`` adds a location and scale to
#: ``StandardNormal``).
NATIVE_MODULES = frozenset({
    Flow, MixedFlow, Compose, Inverse, MaskedAutoregressive, MaskedAffineAutoregressive, MADE,
    MaskedLinear, nn.Sequential, nn.ReLU, nn.ModuleList, RationalQuadraticSpline, Affine,
    StandardNormal, MADEMixture, CategoricalMADE,
})


class StackedMembers(nn.Module):
    """``K`` models of one architecture as one module: ``(K, n, D)`` rows in, ``(K, n)`` log-densities out.

    Parameters
    ----------
    models : list of skflow.models.flow.FlowModel
        Models of identical architecture (differently initialised); their
        weights are copied.
    """

    needs_noise = False

    def __init__(self, models):
        super().__init__()
        params, buffers = stack_module_state(models)
        self._param_names, self._buffer_names = list(params), list(buffers)
        self.weights = nn.ParameterList(nn.Parameter(params[name].detach().clone()) for name in params)
        for i, name in enumerate(self._buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[name].clone())
        # the architecture without weights; not a submodule, so it holds no parameters of the module
        object.__setattr__(self, "_template", copy.deepcopy(models[0]).to("meta"))
        self.n_members = len(models)
        self.native = _natively_stackable(models[0], buffers)
        #: Members still training (see :meth:`set_active`).
        self.register_buffer("active", torch.ones(len(models), dtype=torch.bool), persistent=False)
        self._members = None  # their indices, on the device, once some have stopped

    def set_active(self, active):
        """Mark the members still training (boolean mask; :class:`MemberEarlyStopping` calls it once an
        epoch). Only their losses count, and on the batched-matrix path only they are computed. The
        indices are found here, once an epoch, so that the forward pass adds no host sync."""
        self.active.copy_(active)
        self._members = None if bool(self.active.all()) else torch.nonzero(self.active).flatten()

    def _state(self):
        params = dict(zip(self._param_names, self.weights))
        buffers = {name: getattr(self, f"buffer_{i}") for i, name in enumerate(self._buffer_names)}
        return params, buffers

    def train(self, mode=True):
        self._template.train(mode)  # batch norm reads the template's mode inside functional_call
        return super().train(mode)

    def forward(self, x, context=None):
        """Log-density of member ``k``'s rows ``x[k]`` under member ``k``; shape ``(K, n)``."""
        if self.native:  # rows end to end; every weight is a masked layer's, which takes the member axis
            params, buffers = self._state()
            shared = {name: value[0] for name, value in buffers.items()}  # identical in every member
            members = self._members
            if members is not None:  # stopped members: no work, zero log-density
                if not len(members):
                    return x.new_zeros(x.shape[:2])
                params = {name: value.index_select(0, members) for name, value in params.items()}
                x, context = x[members], None if context is None else context[members]
            flat = lambda t: None if t is None else t.reshape(-1, *t.shape[2:])
            log_prob = functional_call(self._template, (params, shared), (flat(x), flat(context)))
            log_prob = log_prob.reshape(x.shape[:2])
            if members is None:
                return log_prob
            return log_prob.new_zeros(self.n_members, x.shape[1]).index_copy(0, members, log_prob)
        call = lambda p, b, x, c: functional_call(self._template, (p, b), (x, c))
        in_dims = (0, 0, 0, None if context is None else 0)
        return vmap(call, in_dims=in_dims, randomness="different")(*self._state(), x, context)

    def member_norms(self):
        """Per-member 2-norm of the gradient, shape ``(K,)``."""
        squares = [
            w.grad.reshape(self.n_members, -1).pow(2).sum(1) for w in self.weights if w.grad is not None
        ]
        return torch.stack(squares).sum(0).sqrt()

    def unstack(self, models):
        """Load member ``k``'s weights and buffers into ``models[k]``; return ``models``."""
        params, buffers = self._state()
        for k, model in enumerate(models):
            state = {name: value[k].detach().clone() for name, value in {**params, **buffers}.items()}
            model.load_state_dict(state)
        return models


class MemberEarlyStopping(Callback):
    """Early stopping for each member of a :class:`StackedMembers` on its own validation rows.

    At the end of every epoch each member's mean validation log-likelihood is
    computed on its rows. A member stops, as it would alone, once it has gone
    ``patience`` epochs without improving: its best weights up to then are
    the ones it keeps. From then on its loss no longer counts (so it gets no
    gradient) and, on the batched-matrix path, it is no longer computed.
    Training ends when every member has stopped, so the stack runs as long as
    its slowest member. In the history, ``train_loss`` is the summed training
    loss of the members still training, ``valid_loss`` the sum of the
    members' validation losses (a stopped member's at its best) and
    ``valid_loss_members`` each member's.

    Parameters
    ----------
    x : tensor of shape (K, n_valid, D)
        Member ``k``'s validation rows in ``x[k]``.
    context : tensor of shape (K, n_valid, C) or None
    weight : tensor of shape (K, n_valid) or None
        The rows' weights (the validation loss is their weighted mean).
    patience : int
    batch_size : int, default=8192
        Rows per member evaluated at once.
    log_q : tensor of shape (K, n_valid, n_draws) or None
        For rows with missing cells: ``x`` and ``context`` then hold ``n_draws``
        filled copies of each row (consecutive), and ``log_q`` their proposal
        log-densities (see :func:`skflow.data.missing.fill`).
    """

    def __init__(self, x, context, weight, patience, batch_size=8192, log_q=None):
        self.x, self.context, self.weight, self.log_q = x, context, weight, log_q
        self.patience, self.batch_size = patience, batch_size

    def on_train_begin(self, net, **kwargs):
        module = net.module_
        self.best_ = torch.full((module.n_members,), math.inf, device=self.x.device)
        self.wait_ = torch.zeros(module.n_members, dtype=torch.long, device=self.x.device)
        self.stopped_ = torch.zeros(module.n_members, dtype=torch.bool, device=self.x.device)
        module.set_active(torch.ones_like(module.active))
        self.best_epoch_ = torch.zeros(module.n_members, dtype=torch.long)
        self.stop_epoch_ = torch.zeros(module.n_members, dtype=torch.long)  # 0: still training
        self._best = [tensor.detach().clone() for tensor in _state_tensors(module)]

    @torch.no_grad()
    def _losses(self, module):
        was_training = module.training
        module.eval()
        draws = 1 if self.log_q is None else self.log_q.shape[-1]
        n_rows = self.x.shape[1] // draws
        weight = torch.ones(self.x.shape[0], n_rows, device=self.x.device) if self.weight is None else self.weight
        total = torch.zeros(module.n_members, dtype=torch.float64, device=self.x.device)
        for start in range(0, n_rows, self.batch_size):
            stop = min(start + self.batch_size, n_rows)
            rows = slice(start * draws, stop * draws)
            context = None if self.context is None else self.context[:, rows]
            log_prob = module(self.x[:, rows], context)
            if self.log_q is not None:
                log_prob = importance_reduce(log_prob, self.log_q[:, start:stop])
            total += (log_prob.double() * weight[:, start:stop]).sum(1)
        module.train(was_training)
        return -total / weight.double().sum(1)

    def on_epoch_end(self, net, **kwargs):
        module = net.module_
        # a stopped member is not computed any more (batched-matrix path): its loss is its best one
        losses = torch.where(self.stopped_, self.best_, self._losses(module))
        net.history.record("valid_loss", float(losses.sum()))
        net.history.record("valid_loss_members", losses.tolist())
        # a member that has stopped keeps the best weights it had then, as if trained alone
        improved = torch.isfinite(losses) & (losses < self.best_) & ~self.stopped_
        self.best_ = torch.where(improved, losses, self.best_)
        self.wait_ = torch.where(improved, 0, self.wait_ + 1)
        stopping = (self.wait_ >= self.patience) & ~self.stopped_
        self.stop_epoch_[stopping.cpu()] = len(net.history)
        self.stopped_ |= stopping
        self.best_epoch_[improved.cpu()] = len(net.history)
        for best, tensor in zip(self._best, _state_tensors(module)):
            best[improved] = tensor.detach()[improved]
        module.set_active(~self.stopped_)
        if bool(self.stopped_.all()):
            raise KeyboardInterrupt  # skorch ends the fit as after its last epoch (on_train_end runs)

    def on_train_end(self, net, **kwargs):
        self.stop_epoch_[self.stop_epoch_ == 0] = len(net.history)  # members that ran to the end
        net.module_.set_active(torch.ones_like(net.module_.active))
        with torch.no_grad():
            for best, tensor in zip(self._best, _state_tensors(net.module_)):
                tensor.copy_(best)


def _natively_stackable(model, stacked_buffers):
    """Whether ``model`` is built only of modules known to take the members' rows end to end (every
    weight in a :class:`MaskedLinear`, which takes stacked weights; no batch statistics, no random
    numbers, no buffer that changes: the types of :data:`NATIVE_MODULES`) and its buffers (masks,
    orders) are the same in every member."""
    if not all(type(module) in NATIVE_MODULES for module in model.modules()):
        return False
    return all(bool((value == value[:1]).all()) for value in stacked_buffers.values())


def _state_tensors(module):
    """The stacked weights and floating-point buffers (e.g. batch-norm statistics) of a member stack."""
    return list(module.weights) + [b for b in module.buffers() if b.is_floating_point()]
