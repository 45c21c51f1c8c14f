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

from ..data.missing import fill, importance_reduce

__all__ = ["BatchIterator", "FlowNet", "NegativeLogLikelihood", "TensorDataset"]


class TensorDataset(torch.utils.data.Dataset):
    """Rows of a float tensor ``x`` and, optionally, of a context tensor, on one device.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
    context : array-like of shape (n_samples, context_features), default=None
    weight : array-like of shape (n_samples,), default=None
        Per-row weights of the loss (see :class:`NegativeLogLikelihood`).
    device : str or torch.device, default="cpu"
    members : array-like of int of shape (n_members, n_rows), default=None
        For members trained as one stacked module
        (:mod:`skflow.training.stacked`): member ``k`` trains on rows
        ``members[k]``, and batches carry a leading member axis.
    proposal : skflow.data.missing.GaussianProposal, default=None
        Fills missing (NaN) cells of ``x`` (see :class:`BatchIterator`); ``missing`` then holds
        its factors for these rows (None when ``x`` has no NaN).
    """

    def __init__(self, x, context=None, weight=None, device="cpu", dtype=torch.float32, members=None,
                 proposal=None):
        self.x = torch.as_tensor(x, dtype=dtype, device=device)
        self.context = None if context is None else torch.as_tensor(context, dtype=dtype, device=device)
        self.weight = None if weight is None else torch.as_tensor(weight, dtype=dtype, device=device)
        self.members = None if members is None else torch.as_tensor(members, dtype=torch.long, device=device)
        observed = ~torch.isnan(self.x)
        self.missing = None
        if proposal is not None and not bool(observed.all()):
            self.missing = proposal.tensors(observed.cpu().numpy(), device, dtype)

    def __len__(self):
        return len(self.x) if self.members is None else self.members.shape[1]

    def __getitem__(self, i):
        item = {"x": self.x[i]}
        if self.context is not None:
            item["context"] = self.context[i]
        return item, torch.zeros(())


class BatchIterator:
    """Yield ``(batch, weight)`` with ``batch`` a dict of tensors (``weight``: the rows' weights or None).

    Batches have near-equal sizes (never a stray batch of one row); their
    boundaries are computed on the host, so iterating costs no device sync.
    Every random draw comes from one ``torch.Generator`` seeded by ``seed``
    and made on the data's device. In training (``shuffle=True``) rows are
    shuffled each epoch and the training noise is added:

    - uniform noise ``U(-w/2, w/2)`` of per-feature width ``noise_width``
      (dequantization of integer columns);
    - Gaussian noise of per-feature standard deviation ``smoothing_std``
      (point-mass smoothing, TarFlow's noise augmentation);
    - Gaussian noise of per-column standard deviation ``context_noise`` on the context
      (noise regularisation of a conditional density, Rothfuss et al. 2019);
    - with ``context_dropout``, each row's context is replaced by zeros (the
      null context of classifier-free guidance) with that probability.

    With ``dequantization_noise`` the batch also carries ``noise``, uniform in
    ``[0, 1)`` and shaped like ``x``, for a dequantizer inside the model.

    Without shuffling (validation) the generator restarts from ``seed`` each
    epoch, so every epoch is scored on the same noise.

    When the dataset has missing (NaN) cells (``dataset.missing``), each row of
    a batch becomes ``missing_draws`` rows whose missing cells are drawn from
    the proposal (:func:`skflow.data.missing.fill`), and the batch's target
    is ``(weight, log_q)``: :class:`NegativeLogLikelihood` then averages each
    row's draws by importance weights, the MIWAE bound of the observed cells.

    Parameters
    ----------
    dataset : TensorDataset
    batch_size : int
    shuffle : bool, default=False
    noise_width : array-like of shape (n_features,), default=None
    smoothing_std : array-like of shape (n_features,), default=None
    context_noise : float or array-like of shape (context_features,), default=None
    context_dropout : float, default=0.0
    dequantization_noise : bool, default=False
    missing_draws : int, default=8
    seed : int, default=0
    num_processes, process_index : int, default=1, 0
        Data-parallel training (see :mod:`skflow.training.parallel`): every
        process draws the same shuffled, noisy epoch from the same seed, and
        process ``k`` takes the ``k``-th of ``num_processes`` near-equal
        slices of each batch. So ``batch_size`` is the global batch, and the
        averaged gradient equals that of one process training on all rows.
    """

    def __init__(
        self,
        dataset,
        batch_size,
        shuffle=False,
        noise_width=None,
        smoothing_std=None,
        context_noise=None,
        context_dropout=0.0,
        dequantization_noise=False,
        missing_draws=8,
        seed=0,
        num_processes=1,
        process_index=0,
    ):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.num_processes, self.process_index = num_processes, process_index
        self.noise_width = self._per_feature(noise_width)
        self.smoothing_std = self._per_feature(smoothing_std)
        self.context_noise = self._per_feature(context_noise)
        self.context_dropout = context_dropout
        self.dequantization_noise = dequantization_noise
        self.missing_draws = missing_draws
        self.seed = seed
        self._generator = None

    def _per_feature(self, values):
        """``values`` (one per feature, or one for all) as a tensor beside the data, or None when all are zero."""
        if values is None:
            return None
        x = self.dataset.x
        values = torch.as_tensor(values, dtype=x.dtype, device=x.device)
        return values if bool((values > 0).any()) else None

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
        x, context, members = self.dataset.x, self.dataset.context, self.dataset.members
        n = len(self.dataset)
        order = members  # rows of each member (K, n), or all rows in order
        if self.shuffle:
            if members is None:
                order = torch.randperm(n, generator=rng, device=x.device)
            else:  # each member shuffles its own rows
                keys = torch.rand(members.shape, generator=rng, device=x.device)
                order = members.gather(1, keys.argsort(dim=1))
        weight = self.dataset.weight
        if order is not None:
            x = x[order]
            context = None if context is None else context[order]
            weight = None if weight is None else weight[order]
        if self.shuffle:
            x = self._noisy(x, rng)
            if context is not None and self.context_noise is not None:
                noise = torch.randn(context.shape, generator=rng, device=x.device, dtype=context.dtype)
                context = context + noise * self.context_noise
            if context is not None and self.context_dropout > 0:
                keep = torch.rand(*x.shape[:-1], 1, generator=rng, device=x.device) >= self.context_dropout
                context = context * keep
        batch = {"x": x}
        if context is not None:
            batch["context"] = context
        missing = self.dataset.missing
        if missing is not None:
            batch["pattern"] = missing["index"] if order is None else missing["index"][order]
        elif self.dequantization_noise:
            batch["noise"] = torch.rand(x.shape, generator=rng, device=x.device, dtype=x.dtype)
        start = 0
        for size in _split_sizes(n, len(self)):
            parts = _split_sizes(size, self.num_processes)  # this process's slice of the global batch
            first = start + sum(parts[: self.process_index])
            stop = first + parts[self.process_index]
            rows = slice(first, stop) if members is None else (slice(None), slice(first, stop))
            part = {key: value[rows] for key, value in batch.items()}
            target = None if weight is None else weight[rows]
            if missing is not None:
                part, target = self._filled(part, target, missing, rng)
            yield part, target
            start += size

    def _filled(self, batch, weight, missing, rng):
        """The batch with each row's missing cells drawn ``missing_draws`` times; target ``(weight, log_q)``."""
        x, k = batch.pop("x"), self.missing_draws
        shape = (*x.shape[:-1], k, x.shape[-1])
        normal = torch.randn(shape, generator=rng, device=x.device, dtype=x.dtype)
        uniform = torch.rand((*shape[:-1], shape[-1] + 1), generator=rng, device=x.device, dtype=x.dtype)
        filled, log_q = fill(x, batch.pop("pattern"), missing, normal, uniform)
        out = {"x": filled.flatten(-3, -2)}
        if "context" in batch:
            out["context"] = batch["context"].repeat_interleave(k, dim=-2)
        if self.dequantization_noise:
            out["noise"] = torch.rand(out["x"].shape, generator=rng, device=x.device, dtype=x.dtype)
        return out, (weight, log_q)


def _split_sizes(n, n_batches):
    """Sizes of ``n_batches`` near-equal consecutive batches of ``n`` rows."""
    base, extra = divmod(n, n_batches)
    return [base + 1] * extra + [base] * (n_batches - extra)


class NegativeLogLikelihood:
    """Mean negative log-likelihood of a batch of log-densities, summed over members.

    With per-row ``weight`` (the batch's "target", as the iterator yields it)
    the mean is weighted: ``-sum(w log p) / sum(w)``, so a row of weight 2
    counts exactly as the row twice. A target ``(weight, log_q)`` marks
    ``K`` filled draws per row (:class:`BatchIterator`): each row's log-density
    is then their importance-weighted average (``log mean_k p_k / q_k``).

    ``log_prob`` has shape ``(n,)``, or ``(n_members, n)`` for stacked
    members: each member's mean is its own loss, so the sum gives every
    member the gradient it would get alone. ``members`` (a boolean mask over
    the members) restricts the sum to the members still training. A plain callable, not a
    ``torch.nn.Module``: it has no parameters, and accelerate would otherwise
    try to wrap it for data-parallel training.
    """

    def __call__(self, log_prob, weight=None, members=None):
        if isinstance(weight, tuple):  # rows with missing cells, drawn K times: (weight, log q)
            weight, log_q = weight
            log_prob = importance_reduce(log_prob, log_q)
        if weight is None:
            losses = -log_prob.mean(dim=-1)
        else:
            losses = -(log_prob * weight).sum(dim=-1) / weight.sum(dim=-1)
        return losses.sum() if members is None else torch.where(members, losses, 0.0).sum()


class FlowNet(NeuralNet):
    """A skorch ``NeuralNet`` whose module returns log-densities.

    The module is called with the batch's keyword arguments (``x``, and
    ``context`` or ``noise`` when present) and returns ``log p(x)`` per row;
    the loss is its negative mean.

    Two training options act on the training step only (validation and
    scoring run the plain float32 module):

    - ``precision="bfloat16"``: the forward pass runs under bf16 autocast
      (matrix products in bf16); the layers hand float32 parameters to their
      elementwise maps, and log-determinants and the base density are summed
      in float32 (see :class:`skflow.models.flow.Flow`).
    - ``compile_module=True``: the module's forward pass is compiled with
      ``torch.compile`` at the first training batch. The compiled wrapper is
      a cache, dropped at the end of training and never pickled.

    One host-device synchronisation per batch remains, inside skorch: its
    epoch loop records each batch's loss in the history with ``.item()``.
    skflow's own code adds none (see :class:`~skflow.training.callbacks.DivergenceGuard`).
    """

    def __init__(self, *args, precision="float32", compile_module=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision
        self.compile_module = compile_module

    def _training_forward(self):
        if not self.compile_module:
            return self.module_
        cached = self.__dict__.get("_compiled")
        if cached is None or cached[0] is not self.module_:
            cached = (self.module_, torch.compile(self.module_))
            self._compiled = cached
        return cached[1]

    def _set_training(self, training=True):
        # skorch sets the mode of every submodule before every batch; skip it when nothing changes
        if self.module_.training != training:
            super()._set_training(training)

    def infer(self, x, **fit_params):
        if not self.module_.training:
            return self.module_(**x, **fit_params)
        device_type = x["x"].device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return self._training_forward()(**x, **fit_params).float()

    def on_train_end(self, *args, **kwargs):
        self.__dict__.pop("_compiled", None)
        return super().on_train_end(*args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)
        return state

    def get_loss(self, y_pred, y_true=None, X=None, training=False):
        # stacked members (:mod:`skflow.training.stacked`): the loss of those still training
        return self.criterion_(y_pred, y_true, members=getattr(self.module_, "active", None))
