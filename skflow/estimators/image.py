"""Image density estimators: multi-scale RealNVP and Glow.

Both accept ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, C*H*W)`` arrays with
``image_shape``. With ``n_bins`` they model discrete pixels through a
dequantizer inside the model (uniform or variational) and a logit, and
``score_samples`` is a lower bound of the log-probability of each discrete
image in nats (see :func:`skflow.metrics.bits_per_dim`); without, the pixels
are continuous, standardised by one global mean and scale.
"""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from ..data import GlobalScaler
from ..models.dequantization import UniformDequantization, VariationalDequantization
from ..models.distributions import StandardNormal
from ..models.flow import Flow
from ..transforms import ActNorm, AffineCoupling, Compose, Inverse, LULinear
from ..transforms.multiscale import (
    ConvResNet,
    FixedAffine,
    Flatten,
    Logit,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from .density import FlowDensity, parameters, training_doc

__all__ = ["GlowDensity", "RealNVPImageDensity"]

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]

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
        ``logit(alpha + (1 - 2 alpha) y)``; None models ``2 y - 1``.
    n_score_draws : int, default=4
        Dequantization draws per image in ``score_samples`` (combined as an
        importance-weighted bound; seeded by each image's values, so scores
        are deterministic)."""

_CONDITIONER_DOC = """
    hidden_channels : int, default={hidden_channels}
        Width of the conditioners (convolutional ResNets of the affine couplings).
    n_blocks : int, default={n_blocks}
        Residual blocks per conditioner."""

_ATTRIBUTES_DOC = """
    net_ : skflow.training.FlowNet
        The fitted skorch network; ``net_.module_`` is the flow (behind a
        :class:`skflow.models.flow.DequantizedFlow` with ``n_bins``).
    history_ : skorch.History
        Per-epoch training (and validation) loss: minus the bound, in nats
        per image (of standardised pixels when ``n_bins`` is None).
    n_iter_ : int
        Number of epochs run.
    standardizer_ : skflow.data.GlobalScaler
        The affine map of the pixels (identity with ``n_bins``); its
        log-determinant is added to every log-density.
    image_shape_ : tuple of int
        ``(C, H, W)`` of the training images.
    layout_ : skflow.data.ImageLayout
        The layout of X in ``fit``; ``sample`` returns it.
    classes_ : ndarray of shape (n_classes,) or None
        Class labels seen in fit (None when fitted without ``y``).
    class_prior_ : ndarray of shape (n_classes,) or None
        Class frequencies in the training data.
    n_features_in_ : int
        ``C * H * W``."""

_DEQUANTIZERS = {
    "uniform": lambda est: UniformDequantization(est.n_bins),
    "variational": lambda est: VariationalDequantization(est.n_bins, est.image_shape_),
}

#: Images per forward pass when scoring (conv activations are large).
IMAGE_BATCH = 512


def pixel_transform(n_bins, logit_alpha):
    """The flow's first step on dequantized pixels in ``(0, 1)``: a logit, or ``2 y - 1``; None without bins."""
    if n_bins is None:
        return None
    return Logit(logit_alpha) if logit_alpha is not None else FixedAffine(2.0, -1.0)


def _doc(cls):
    training = training_doc(max_epochs=100, weight_decay=0.0, patience=10)
    conditioner = _CONDITIONER_DOC.format(hidden_channels=cls.hidden_channels, n_blocks=cls.n_blocks)
    cls.__doc__ = (
        cls.__doc__.replace("{conditioner}", conditioner)
        .replace("{image}", IMAGE_DOC)
        .replace("{training}", training)
        .replace("{attributes}", _ATTRIBUTES_DOC)
    )
    return cls


def _coupling(mask, n_channels, hidden_channels, n_blocks, context_features):
    conditioner = ConvResNet(n_channels + context_features, 2 * n_channels, hidden_channels, n_blocks)
    return AffineCoupling(mask, conditioner)


def _can_squeeze(shape):
    return shape[1] % 2 == 0 and shape[2] % 2 == 0


def _realnvp(shape, n_levels, hidden_channels, n_blocks, context_features=0):
    """RealNVP's multi-scale transform (Dinh et al. 2017, section 3.6) on images of ``shape``.

    Each level: 3 checkerboard couplings, squeeze, 3 channel-wise couplings,
    then half the channels are factored out. The last level (or the first
    whose height or width is odd): 4 checkerboard couplings. Every coupling
    is followed by act-norm.
    """
    n_channels, height, width = shape

    def couplings(masks, channels):
        """An affine coupling per mask, each followed by act-norm."""
        conditioner = (hidden_channels, n_blocks, context_features)
        return [
            layer for mask in masks for layer in (_coupling(mask, channels, *conditioner), ActNorm(channels))
        ]

    checkers = [checkerboard_mask(height, width, k % 2) for k in range(4)]
    if n_levels == 1 or not _can_squeeze(shape):
        return Compose(*couplings(checkers, n_channels), Flatten(shape))
    squeezed = (4 * n_channels, height // 2, width // 2)
    channelwise = couplings([channel_mask(squeezed[0], k % 2) for k in range(3)], squeezed[0])
    level = Compose(*couplings(checkers[:3], n_channels), Squeeze(), *channelwise)
    inner_shape = (squeezed[0] - squeezed[0] // 2, *squeezed[1:])
    inner = _realnvp(inner_shape, n_levels - 1, hidden_channels, n_blocks, context_features)
    return MultiScale(level, inner, squeezed)


def _glow(shape, n_levels, n_steps, hidden_channels, n_blocks, context_features=0):
    """Glow's multi-scale transform (Kingma and Dhariwal 2018, figure 2) on images of ``shape``.

    Each level: squeeze, then ``n_steps`` of act-norm, invertible 1x1
    convolution and affine coupling; half the channels are then factored out,
    except at the last level (or when the squeezed height or width is odd),
    with Glow's learned conditional prior ``N(mu(h), sigma(h))`` given the
    kept half ``h``: an affine coupling of the factored half.
    """
    if not _can_squeeze(shape):
        raise ValueError(f"Glow needs even image height and width, got images of shape {shape}.")
    n_channels, height, width = shape
    squeezed = (4 * n_channels, height // 2, width // 2)
    channels = squeezed[0]
    coupling = lambda mask: _coupling(mask, channels, hidden_channels, n_blocks, context_features)
    steps = []
    for _ in range(n_steps):
        steps += [
            ActNorm(channels),
            LULinear(channels, dim=1, init="rotation"),
            coupling(channel_mask(channels)),
        ]
    if n_levels == 1 or not _can_squeeze(squeezed):
        return Compose(Squeeze(), *steps, Flatten(squeezed))
    level = Compose(Squeeze(), *steps, coupling(channel_mask(channels, 1)))  # the prior of the factored half
    inner_shape = (channels // 2, *squeezed[1:])
    inner = _glow(inner_shape, n_levels - 1, n_steps, hidden_channels, n_blocks, context_features)
    return MultiScale(level, inner, squeezed)


@parameters
class _ImageDensity(FlowDensity):
    """The hooks the image estimators share: images in, global scaling or dequantization, pixel transform.

    Subclasses define ``_image_transform(image_shape, context_features)``.
    """

    _tail_weight = 0.0  # image scores are dequantization bounds; no tail mixture
    _images = "required"
    _inference_batch = IMAGE_BATCH
    _check_rows = 256

    _parameter_constraints = {
        **FlowDensity._parameter_constraints,
        "image_shape": [tuple, list, None],
        "n_bins": [Interval(Integral, 2, None, closed="left"), None],
        "dequantization": [StrOptions(set(_DEQUANTIZERS))],
        "logit_alpha": [Interval(Real, 0, 0.5, closed="neither"), None],
        "n_score_draws": _POSITIVE_INT,
        "n_levels": _POSITIVE_INT,
        "hidden_channels": _POSITIVE_INT,
        "n_blocks": [Interval(Integral, 0, None, closed="left")],
    }

    n_levels: int = 2
    hidden_channels: int = 32
    n_blocks: int = 2
    image_shape: object = None
    n_bins: object = None
    dequantization: str = "uniform"
    logit_alpha: float = 0.05
    n_score_draws: int = 4
    max_epochs: object = 100
    batch_size: object = 64
    lr: object = 1e-3
    weight_decay: float = 0.0
    patience: object = 10

    def _make_scaler(self):
        return GlobalScaler(scale=self.n_bins is None)

    def _dequantizer(self):
        return None if self.n_bins is None else _DEQUANTIZERS[self.dequantization](self)

    def _build_flow(self, n_features, context_features):
        steps = [pixel_transform(self.n_bins, self.logit_alpha), Inverse(Flatten(self.image_shape_))]
        steps.append(self._image_transform(self.image_shape_, context_features))
        return Flow(Compose(*[s for s in steps if s is not None]), StandardNormal(n_features))


@_doc
class RealNVPImageDensity(_ImageDensity):
    """Multi-scale RealNVP for images (Dinh et al. 2017).

    Checkerboard and channel-wise affine couplings with convolutional ResNet
    conditioners, squeeze, and the multi-scale architecture that factors half
    of the dimensions out at each level; standard normal base.

    Parameters
    ----------
    n_levels : int, default=2
        Scales; each but the last ends by squeezing and factoring out half the
        channels. Fewer are used when a squeeze would meet an odd size.{conditioner}{image}{training}

    Attributes
    ----------{attributes}

    See Also
    --------
    GlowDensity : Act-norm, 1x1 convolutions and affine couplings.
    skflow.MAFDensity : Treats the pixels as a flat vector.

    References
    ----------
    Dinh, Sohl-Dickstein and Bengio (2017). Density estimation using Real NVP. ICLR.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skflow.estimators.image import RealNVPImageDensity
    >>> from skflow.metrics import bits_per_dim
    >>> X = load_digits().images[:100].astype(int)  # (100, 8, 8), values 0..16
    >>> est = RealNVPImageDensity(n_bins=17, hidden_channels=8, n_blocks=1,
    ...                           max_epochs=2, random_state=0).fit(X)
    >>> est.sample(2, random_state=0).shape
    (2, 8, 8)
    >>> bits_per_dim(est, X) > 0
    True
    """

    def _image_transform(self, image_shape, context_features):
        return _realnvp(image_shape, self.n_levels, self.hidden_channels, self.n_blocks, context_features)


@_doc
@parameters
class GlowDensity(_ImageDensity):
    """Glow (Kingma and Dhariwal 2018): act-norm, invertible 1x1 convolutions, affine couplings.

    Each level squeezes, applies ``n_steps`` flow steps (act-norm with
    data-dependent initialisation, an LU-parametrised invertible 1x1
    convolution, a channel-wise affine coupling with a convolutional ResNet
    conditioner) and factors out half of the channels, whose prior is a
    Gaussian with mean and scale learned from the kept half.
    Image height and width must be even.

    Parameters
    ----------
    n_levels : int, default=2
        Scales. Fewer are used when a squeeze would meet an odd size.
    n_steps : int, default=4
        Flow steps per level.{conditioner}{image}{training}

    Attributes
    ----------{attributes}

    See Also
    --------
    RealNVPImageDensity : Checkerboard and channel-wise couplings.

    References
    ----------
    Kingma and Dhariwal (2018). Glow: Generative Flow with Invertible 1x1
    Convolutions. NeurIPS.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skflow.estimators.image import GlowDensity
    >>> digits = load_digits()
    >>> X = digits.data[:100]  # flat (100, 64), values 0..16
    >>> est = GlowDensity(image_shape=(1, 8, 8), n_bins=17, n_steps=2,
    ...                   hidden_channels=8, max_epochs=2, random_state=0).fit(X)
    >>> est.sample(3, random_state=0).shape
    (3, 64)
    """

    _parameter_constraints = {**_ImageDensity._parameter_constraints, "n_steps": _POSITIVE_INT}

    n_steps: int = 4
    n_blocks: int = 1

    def _image_transform(self, image_shape, context_features):
        return _glow(
            image_shape, self.n_levels, self.n_steps, self.hidden_channels, self.n_blocks, context_features
        )
