"""The models every estimator holds, with one protocol.

``Flow(transform, base)`` gives ``log p(x | c) = log p_base(T(x; c) | c) + log|det dT/dx|``
and samples by inverting ``T``. ``DequantizedFlow`` puts a dequantizer in front
of a flow for discrete data (pixels with ``n_bins`` levels) and gives the
variational lower bound of ``log P(x)``. ``MixedFlow`` models tables with
discrete columns exactly: ``log P(d) + log p(c | d)``.

The protocol (:class:`FlowModel`), which is all the estimators' trunk uses:

- ``log_prob(x, context=None, noise=None)``: log-density per row; ``noise``
  is the uniform dequantization noise, needed when ``needs_noise`` is True
  and ignored otherwise. ``forward`` is ``log_prob`` (what training calls).
- ``log_prob_parts(x, context=None, noise=None)``: ``(log P(discrete part),
  log p(continuous part))``, whose sum is ``log_prob``.
- ``sample(n_samples, context=None, generator=None)``; ``flow`` is the
  continuous flow inside (the model itself for a :class:`Flow`) and
  ``quantize`` maps its samples to the model's values (identity but for a
  dequantized model).
- ``init_from_data(x)``: data-dependent initialisation before training.
- ``start_at_gaussian(mean, cov)``: prepend an affine layer (trainable) that
  whitens ``N(mean, cov)``, so that the model starts as that Gaussian (used for
  data with missing cells, see :mod:`skflow.data.missing`).
"""

import numpy as np
import torch
from torch import nn

from ..transforms.core import Compose
from ..transforms.linear import LULinear

__all__ = ["DequantizedFlow", "Flow", "FlowModel", "MixedFlow"]


class FlowModel(nn.Module):
    """The protocol of skflow's models (see the module docstring); defaults for a plain flow."""

    #: Whether ``log_prob`` needs the dequantization ``noise``.
    needs_noise = False

    def forward(self, x, context=None, noise=None):
        """Log-density of each row of ``x``; shape ``(n_samples,)``."""
        return self.log_prob(x, context, noise)

    def log_prob(self, x, context=None, noise=None):
        log_discrete, log_continuous = self.log_prob_parts(x, context, noise)
        return log_discrete + log_continuous

    @property
    def flow(self):
        """The continuous flow inside the model."""
        return self

    def quantize(self, x):
        """The flow's samples as the model's values (identity for continuous models)."""
        return x

    def init_from_data(self, x):
        """Data-dependent initialisation from training rows ``x`` (none by default)."""

    def start_at_gaussian(self, mean, cov):
        """Prepend a trainable affine layer that maps ``N(mean, cov)`` to ``N(0, I)`` (see the module
        docstring); a model without a continuous flow it can go in front of does nothing."""

    def log_prob_terms(self, x, context=None):
        """The chain-rule terms ``log p(x_j | x_<j)``, ``(n, n_features)``, for a model that is
        autoregressive in one order; a ``TypeError`` saying why for any other."""
        raise TypeError(f"{type(self).__name__} does not factorise into one term per feature.")


class Flow(FlowModel):
    """``log p(x | context) = log p_base(T(x)) + log|det dT/dx|``.

    Parameters
    ----------
    transform : skflow.transforms.Transform
        Maps data to the base space; receives the context.
    base : torch.nn.Module
        Has ``log_prob(z, context=None)`` and
        ``sample(n_samples, context=None, generator=None)``.
    """

    def __init__(self, transform, base):
        super().__init__()
        self.transform = transform
        self.base = base

    def log_prob(self, x, context=None, noise=None):
        z, ladj = self.transform(x, context)
        # Under bf16 autocast (``precision="bfloat16"``) the transform's matrix
        # products run in bf16; the base density and the sum with the
        # log-determinant are kept in the data's precision.
        with torch.autocast(z.device.type, enabled=False):
            return self.base.log_prob(z.to(x.dtype), context) + ladj.to(x.dtype)

    def log_prob_parts(self, x, context=None, noise=None):
        log_prob = self.log_prob(x, context)
        return torch.zeros_like(log_prob), log_prob

    def start_at_gaussian(self, mean, cov):
        layer = whitening(mean, cov)
        inner = self.transform.transforms if isinstance(self.transform, Compose) else [self.transform]
        self.transform = Compose(layer, *inner)

    def log_prob_terms(self, x, context=None):
        """``log p(x_j | x_<j)`` per feature when the flow is at most one autoregressive layer over a
        base that factorises in the same order (MADE, MADE MoG, a one-layer MAF or NSF): then
        ``z_j`` depends on ``x_<j`` only and ``log p(x) = sum_j [log p_base(z_j | z_<j) +
        log|dz_j/dx_j|]`` term by term. A deeper flow mixes the orders of its layers, so its
        log-density has no such split."""
        layers = (
            list(self.transform.transforms) if hasattr(self.transform, "transforms") else [self.transform]
        )
        base_terms = getattr(self.base, "log_prob_terms", None)
        if layers and isinstance(layers[0], LULinear):
            raise TypeError(
                "This flow starts with a learned linear layer that mixes the columns (a flow fitted on rows "
                "with missing cells starts at their Gaussian through one), so its log-density has no "
                "per-column split: fit on complete rows (e.g. after FlowImputer) for per-column terms."
            )
        if len(layers) > 1 or base_terms is None or (layers and not hasattr(layers[0], "forward_terms")):
            raise TypeError(
                "This flow has no per-feature chain-rule terms: it needs at most one autoregressive layer "
                "over a base that factorises (MADEDensity, or MAFDensity/NSFDensity with n_transforms=1 and "
                f"base 'normal', 'diagonal' or 'made_mixture'); got {len(layers)} layers."
            )
        if not layers:
            return base_terms(x, context)
        if hasattr(self.base, "made") and not torch.equal(self.base.made.order, layers[0].made.order):
            raise TypeError("The base's autoregressive order differs from the layer's: no per-feature split.")
        z, ladj = layers[0].forward_terms(x, context)
        return base_terms(z, context) + ladj

    def sample(self, n_samples, context=None, generator=None):
        """Draw ``n_samples`` from the model (base sample, then inverse)."""
        return self.rsample_and_log_prob(n_samples, context, generator)[0]

    def rsample_and_log_prob(self, n_samples, context=None, generator=None):
        """Reparameterised samples and their log-densities, in one pass."""
        z = self.base.sample(n_samples, context, generator)
        log_base = self.base.log_prob(z, context)
        x, ladj = self.transform.inverse(z, context)
        return x, log_base - ladj


class DequantizedFlow(FlowModel):
    """A flow on dequantized values: ``log P(x) >= log p(y) - log q(y | x)``.

    ``x`` holds integers in ``[0, n_bins)``; the dequantizer maps ``x`` and
    uniform noise ``v`` to ``y`` in ``(0, 1)`` and ``log q(y | x)`` (see
    :mod:`skflow.data.noise`). Since the cells tile ``(0, 1)``, the
    expectation over ``v`` of the returned value is a lower bound of
    ``log P(x)`` (Theis et al. 2016; Ho et al. 2019). The noise is an input,
    drawn by the caller from a seeded generator.

    Parameters
    ----------
    flow : Flow
        Density over ``y`` (flat rows).
    dequantizer : torch.nn.Module
        Maps ``(x, noise)`` to ``(y, log q(y | x))``; has ``n_bins``.
    """

    needs_noise = True

    def __init__(self, flow, dequantizer):
        super().__init__()
        self.inner, self.dequantizer = flow, dequantizer

    @property
    def flow(self):
        return self.inner

    def log_prob_parts(self, x, context=None, noise=None):
        if noise is None:
            raise ValueError("DequantizedFlow needs the dequantization noise (uniform, shaped like x).")
        y, log_q = self.dequantizer(x, noise)
        bound = self.inner.log_prob(y, context) - log_q
        return torch.zeros_like(bound), bound

    def quantize(self, y):
        """Values in ``(0, 1)`` back to their integer cells."""
        n_bins = self.dequantizer.n_bins
        return torch.floor(y * n_bins).clamp(0, n_bins - 1)

    def sample(self, n_samples, context=None, generator=None):
        return self.quantize(self.inner.sample(n_samples, context, generator))


class MixedFlow(FlowModel):
    """Exact density of rows with discrete and continuous columns: ``log P(d | ctx) + log p(c | d, ctx)``.

    The discrete codes ``d`` (integers, -1 for a category unseen in fit) go
    through an autoregressive categorical model; the continuous values ``c``
    through a flow whose context is the one-hot ``d`` (followed by any outer
    context, e.g. class labels). Sampling draws ``d`` first, then ``c``.

    Parameters
    ----------
    categorical : skflow.models.distributions.CategoricalMADE
    flow : Flow or None
        Over the continuous columns; None when every column is discrete.
    discrete : bool tensor of shape (n_columns,)
        Which columns of a row are discrete.
    """

    def __init__(self, categorical, flow, discrete):
        super().__init__()
        self.categorical, self.continuous = categorical, flow
        self.register_buffer("discrete", torch.as_tensor(discrete, dtype=torch.bool))
        # column positions as plain lists: indexing by them (unlike by a boolean mask) works under vmap
        self._discrete_columns = [int(i) for i in torch.nonzero(self.discrete).flatten()]
        self._continuous_columns = [int(i) for i in torch.nonzero(~self.discrete).flatten()]

    def _flow_context(self, codes, context):
        one_hot = self.categorical.one_hot(codes).to(self.discrete.device)
        return one_hot if context is None else torch.cat([one_hot.to(context.dtype), context], dim=1)

    def init_from_data(self, x):
        """Start the categorical model at the empirical marginals of the discrete columns."""
        self.categorical.init_marginals(x[:, self.discrete.cpu().numpy()])

    def start_at_gaussian(self, mean, cov):
        """The continuous flow starts at the Gaussian of the continuous columns."""
        if self.continuous is not None:
            columns = np.asarray(self._continuous_columns)
            self.continuous.start_at_gaussian(mean[columns], cov[np.ix_(columns, columns)])

    def log_prob_parts(self, x, context=None, noise=None):
        """``(log P(d | ctx), log p(c | d, ctx))`` per row."""
        codes = x[:, self._discrete_columns].round().long()
        log_discrete = self.categorical.log_prob(codes, context)
        if self.continuous is None:
            return log_discrete, torch.zeros_like(log_discrete)
        flow_context = self._flow_context(codes, context).to(x.dtype)
        return log_discrete, self.continuous.log_prob(x[:, self._continuous_columns], flow_context)

    def sample(self, n_samples, context=None, generator=None):
        codes = self.categorical.sample(n_samples, context, generator)
        x = torch.empty(n_samples, len(self.discrete), device=self.discrete.device)
        x[:, self.discrete] = codes.to(x.dtype)
        if self.continuous is not None:
            flow_context = self._flow_context(codes, context)
            x[:, ~self.discrete] = self.continuous.sample(n_samples, flow_context, generator)
        return x


def whitening(mean, cov):
    """An :class:`~skflow.transforms.linear.LULinear` with bias set to ``x -> L^-1 (x - mean)``,
    ``cov = L L^T``: it maps ``N(mean, cov)`` to ``N(0, I)``."""
    inverse = np.linalg.inv(np.linalg.cholesky(cov))  # lower triangular, positive diagonal
    diagonal = np.diag(inverse)
    layer = LULinear(len(mean), bias=True)
    with torch.no_grad():
        layer.lower.copy_(torch.as_tensor(np.tril(inverse / diagonal, -1)))
        layer.log_s.copy_(torch.as_tensor(np.log(diagonal)))
        layer.bias.copy_(torch.as_tensor(-inverse @ mean))
    return layer
