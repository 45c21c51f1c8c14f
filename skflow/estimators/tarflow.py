"""``TarFlowDensity``: the transformer autoregressive flow as a scikit-learn estimator.

Works on images (patches as tokens) and on tabular rows (groups of features
as tokens); learns ``p(x | y)`` with classifier-free guidance when fitted with
class labels, and is then also a generative classifier.
"""

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..data import GlobalScaler
from ..models.dequantization import UniformDequantization
from ..models.distributions import StandardNormal
from ..models.flow import Flow
from ..transforms import Compose
from ..transforms.tarflow_blocks import guided, tarflow
from .density import FlowDensity, parameters, training_doc
from .image import pixel_transform

__all__ = ["TarFlowDensity"]

#: Bound on each block's log-scales.
MAX_LOG_SCALE = 3.0
#: Probability that a training label is replaced by the null class (classifier-free guidance).
LABEL_DROPOUT = 0.1

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]


def _tweedie_step(flow, x, context, guidance, sigma):
    """``x + sigma^2 * grad log p(x)`` (the guided score when ``guidance != 0``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        log_prob = flow.log_prob(x, context)
        if guidance != 0 and context is not None:
            log_prob = (1 + guidance) * log_prob - guidance * flow.log_prob(x, torch.zeros_like(context))
        (score,) = torch.autograd.grad(log_prob.sum(), x)
    return (x + sigma**2 * score).detach()


def _doc(cls):
    cls.__doc__ = cls.__doc__.replace(
        "{training}", training_doc(batch_size=256, lr=0.0005, weight_decay=0.0001)
    )
    return cls


@_doc
@parameters
class TarFlowDensity(FlowDensity):
    """Transformer autoregressive flow density (TarFlow, Zhai et al. 2024).

    The data are cut into a sequence of tokens: ``patch_size`` x
    ``patch_size`` patches of images, or groups of ``patch_size`` consecutive
    features of tabular rows. Each of ``n_blocks`` flow blocks is a causal
    transformer (``n_layers`` layers of width ``channels``) that maps token
    ``i`` to ``z_i = (x_i - mu_i) * exp(-alpha_i)`` with ``mu_i, alpha_i``
    functions of the tokens before ``i``; blocks alternate the direction.
    Scoring takes one parallel pass; sampling inverts one token at a time
    with a key/value cache.

    Fitted with class labels ``y``, the model learns ``p(x | y)`` (labels are
    replaced by a null class with probability 0.1, which gives the
    unconditional model used by classifier-free guidance); ``score_samples``
    is then the marginal ``log sum_c pi_c p(x | c)``, and ``predict_proba``
    and ``predict`` classify by Bayes' rule.

    Parameters
    ----------
    patch_size : int or "auto", default="auto"
        Patch side for images, features per token for tabular rows
        ("auto": 2 for images, 1 for tabular). Must divide the image's height
        and width, or the number of features.
    n_blocks : int, default=4
        Flow blocks.
    n_layers : int, default=2
        Transformer layers per block.
    channels : int, default=64
        Transformer width; divisible by ``n_heads``.
    n_heads : int, default=4
        Attention heads.
    noise_std : float, default=0.0
        Standard deviation of the Gaussian noise added to the training data,
        in the flow's units (standardised features; pixels scaled to
        ``[-1, 1]`` when ``n_bins`` is set, where the paper uses 0.05). The
        model is then a density of noisy data; ``sample`` denoises by default.
    image_shape : tuple of int (C, H, W) or None, default=None
        Image layout of flat rows. Not needed for arrays of shape
        ``(n, C, H, W)`` or ``(n, H, W)``, which are images.
    n_bins : int or None, default=None
        Pixels (or features) are integers in ``[0, n_bins)``: they are
        scaled to ``[-1, 1]`` and uniformly dequantized, ``score_samples`` is
        the dequantization lower bound of the discrete log-probability, and
        samples are integers. None: continuous data.
    mixing : bool, default=True
        Put an invertible linear map of the token features (shared by all
        tokens, LU-parametrised, with a bias) before every block, so that the
        features within a token are mixed; see
        :class:`skflow.transforms.linear.LULinear` (``dim=-1, bias=True``). False: the paper's
        TarFlow.
    logit_alpha : float or None, default=0.05
        With ``n_bins``: model the pixels in logit space,
        ``logit(alpha + (1 - 2 alpha) u)`` for ``u`` in ``(0, 1)`` (as the
        image flows do); None models them in ``[-1, 1]`` (the paper). Not
        used with ``noise_std > 0`` (noisy pixels leave ``[-1, 1]``).
    n_score_draws : int, default=4
        With ``n_bins``: dequantization draws per sample in ``score_samples``,
        combined as an importance-weighted bound and seeded by each sample's
        values (as the image flows of :mod:`skflow.estimators.image`).
    dequantize : "auto" or bool, default="auto"
        Tabular data without ``n_bins``: integer-valued columns are uniformly
        dequantized during training (see :class:`skflow.MAFDensity`).{training}

    Attributes
    ----------
    net_ : skflow.training.FlowNet
        The fitted skorch network; ``net_.module_`` is a
        :class:`skflow.models.flow.Flow` of :func:`skflow.transforms.tarflow_blocks.tarflow`
        blocks (behind a :class:`skflow.models.flow.DequantizedFlow` with ``n_bins``).
    history_ : skorch.History
        Per-epoch losses (nats per row of scaled data).
    n_iter_ : int
        Number of epochs run.
    standardizer_ : object
        The affine map from X to the flow's units; its ``log_det_`` is added
        to every log-density.
    image_shape_ : tuple of int (C, H, W) or None
        Image layout, None for tabular data.
    layout_ : skflow.data.ImageLayout or None
        The layout of X in ``fit``, which ``sample`` returns.
    classes_ : ndarray of shape (n_classes,) or None
        Class labels seen in fit (None when fitted without ``y``).
    class_prior_ : ndarray of shape (n_classes,) or None
        Class frequencies in the training data.
    n_features_in_ : int
        Number of values per sample (``C * H * W`` for images).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X was a DataFrame with string column names.

    See Also
    --------
    MAFDensity : Autoregressive flow with MADE conditioners.

    References
    ----------
    Zhai, Zhang, Berthelot, Gu, Busbridge, Susskind et al. (2024). Normalizing
    Flows are Capable Generative Models. arXiv:2412.06329.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skflow.estimators.tarflow import TarFlowDensity
    >>> X, y = load_digits(return_X_y=True)
    >>> flow = TarFlowDensity(n_blocks=2, n_layers=1, channels=16, n_bins=17,
    ...                       image_shape=(1, 8, 8), max_epochs=1, random_state=0)
    >>> flow.fit(X[:200], y[:200]).predict(X[:3]).shape
    (3,)
    >>> flow.sample(2, y=3, guidance=1.0, random_state=0).shape
    (2, 64)
    """

    _parameter_constraints = {
        **FlowDensity._parameter_constraints,
        "dequantize": [StrOptions({"auto"}), "boolean"],
        "patch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "n_blocks": _POSITIVE_INT,
        "n_layers": _POSITIVE_INT,
        "channels": _POSITIVE_INT,
        "n_heads": _POSITIVE_INT,
        "noise_std": [Interval(Real, 0, None, closed="left")],
        "image_shape": [tuple, list, None],
        "n_bins": [Interval(Integral, 2, None, closed="left"), None],
        "mixing": ["boolean"],
        "logit_alpha": [Interval(Real, 0, 0.5, closed="neither"), None],
        "n_score_draws": _POSITIVE_INT,
    }

    patch_size: object = "auto"
    n_blocks: int = 4
    n_layers: int = 2
    channels: int = 64
    n_heads: int = 4
    noise_std: float = 0.0
    image_shape: object = None
    n_bins: object = None
    mixing: bool = True
    logit_alpha: float = 0.05
    n_score_draws: int = 4
    max_epochs: object = 300
    batch_size: object = 256
    lr: object = 5e-4
    weight_decay: float = 1e-4
    patience: object = 20
    dequantize: object = "auto"

    _images = "optional"
    _tail_weight = 0.0
    _check_rows = 1024  # rows re-scored after fit (a transformer over images is costly)

    # ---------------------------------------------------------------- hooks
    def _make_scaler(self):
        if self.n_bins is not None:
            return GlobalScaler(scale=False)  # discrete values: the dequantizer inside the model
        if self.image_shape_ is not None:
            return GlobalScaler()  # continuous images: one global mean and scale
        return super()._make_scaler()

    def _dequantizer(self):
        return None if self.n_bins is None else UniformDequantization(self.n_bins)

    def _smoothing_std(self):
        """``noise_std`` in the units of the values the model receives (pixels: ``n_bins / 2`` per unit)."""
        if self.noise_std == 0:
            return None
        per_unit = self.n_bins / 2.0 if self.n_bins is not None else 1.0
        return [self.noise_std * per_unit] * self.n_features_in_

    def _context_dropout(self):
        return LABEL_DROPOUT

    def _build_flow(self, n_features, context_features):
        patch = self.patch_size
        if patch == "auto":
            patch = 1 if self.image_shape_ is None else 2
        sizes = (self.channels, self.n_blocks, self.n_layers, self.n_heads, context_features)
        blocks = tarflow(n_features, self.image_shape_, patch, *sizes, MAX_LOG_SCALE, self.mixing)
        pixels = pixel_transform(self.n_bins, self.logit_alpha if self.noise_std == 0 else None)
        tokens = blocks.transforms[0]
        base = StandardNormal(tokens.n_tokens, tokens.token_features)
        return Flow(Compose(pixels, blocks) if pixels is not None else blocks, base)

    def _sample_scaled(self, module, n, context, generator, guidance=0.0, denoise=False):
        flow = module.flow  # inside a dequantizer, the continuous flow
        with guided(flow, guidance):
            x = flow.sample(n, context, generator)
            if denoise:  # sigma: noise_std (in [-1, 1] pixel units with n_bins) in the flow's units
                sigma = self.noise_std / 2.0 if self.n_bins is not None else self.noise_std
                x = _tweedie_step(flow, x, context, guidance, sigma)
        return module.quantize(x)

    # ------------------------------------------------------------- sampling
    def sample(
        self,
        n_samples=1,
        random_state=None,
        *,
        y=None,
        context=None,
        return_y=False,
        guidance=0.0,
        denoise="auto",
    ):
        """Draw samples, optionally of given classes with classifier-free guidance.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the draw.
        y : label or array-like of shape (n_samples,), default=None
            Classes to sample (conditional models only). None draws the
            classes from ``class_prior_``, i.e. samples the marginal.
        context : array-like of shape (n_samples, n_context_features), default=None
            For a model fitted with a context (see :meth:`FlowDensity.sample`).
        return_y : bool, default=False
            Also return each sample's class (see :meth:`FlowDensity.sample`).
        guidance : float, default=0.0
            Guidance weight ``w``: every block's shifts and log-scales become
            ``a + w * (a - a_null)``. 0 samples ``p(x | y)``.
        denoise : "auto" or bool, default="auto"
            Move each sample by one Tweedie step ``x + noise_std**2 *
            grad log p(x)`` ("auto": when trained with ``noise_std > 0``).

        Returns
        -------
        X : ndarray of shape (n_samples, ...) or DataFrame
            In the layout and units of the training data; integers when
            ``n_bins`` is set.
        """
        check_is_fitted(self)
        if guidance != 0 and self.classes_ is None:
            raise ValueError("guidance needs a model fitted with class labels.")
        if denoise == "auto":
            denoise = self.noise_std > 0
        options = {"guidance": float(guidance), "denoise": bool(denoise)}
        return self._sample(n_samples, random_state, y, context, return_y=return_y, **options)
