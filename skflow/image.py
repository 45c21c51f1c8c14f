"""Image density estimators: multi-scale RealNVP and Glow.

Both accept ``(n, C, H, W)``, ``(n, H, W)`` or flat ``(n, C*H*W)`` arrays with
``image_shape``; with ``n_bins`` they model discrete pixels through
(uniform or variational) dequantization and a logit, and ``score_samples``
is a lower bound of the log-probability of each discrete image in nats (see
:func:`skflow._image.bits_per_dim`).
"""

from numbers import Integral

from sklearn.utils._param_validation import Interval

from ._image import IMAGE_DOC, ImageFlowDensity
from .distributions import StandardNormal
from .flows import Flow
from .transforms import ActNorm, AffineCoupling, Compose
from .transforms.image import (
    ConvResNet,
    Flatten,
    InvertibleConv1x1,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)

__all__ = ["GlowDensity", "RealNVPImageDensity"]

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]

_TRAINING_DOC = """
    max_epochs : int, default=100
        Maximum number of passes over the training images.
    batch_size : int, default=64
        Images per gradient step.
    lr : float, default=1e-3
        Learning rate of AdamW.
    weight_decay : float, default=0.0
        AdamW's decoupled weight decay.
    validation_fraction : float, default=0.1
        Fraction of images held out (seeded by ``random_state``) for early
        stopping on the validation bound; the best weights are restored.
        0 turns the split and early stopping off.
    patience : int, default=10
        Epochs without validation improvement before training stops.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where to train and evaluate; "auto" picks CUDA when available.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, the validation split, shuffling and the
        training dequantization noise.
    verbose : int, default=0
        Print training and validation loss per epoch when > 0."""

_ATTRIBUTES_DOC = """
    net_ : skflow._training.FlowNet
        The fitted skorch network; ``net_.module_`` is a
        :class:`skflow._image.DequantizedImageFlow`.
    history_ : skorch.History
        Per-epoch training (and validation) loss: minus the bound, in nats
        per image (of standardised pixels when ``n_bins`` is None).
    n_iter_ : int
        Number of epochs run.
    image_shape_ : tuple of int
        ``(C, H, W)`` of the training images.
    layout_ : skflow._image.ImageLayout
        The layout of X in ``fit``; ``sample`` returns it.
    n_features_in_ : int
        ``C * H * W``."""


def _doc(cls):
    cls.__doc__ = (
        cls.__doc__.replace("{image}", IMAGE_DOC)
        .replace("{training}", _TRAINING_DOC)
        .replace("{attributes}", _ATTRIBUTES_DOC)
    )
    return cls


def _coupling(mask, n_channels, hidden_channels, n_blocks):
    return AffineCoupling(mask, ConvResNet(n_channels, 2 * n_channels, hidden_channels, n_blocks))


def _can_squeeze(shape):
    return shape[1] % 2 == 0 and shape[2] % 2 == 0


def _realnvp(shape, n_levels, hidden_channels, n_blocks):
    """RealNVP's multi-scale transform (Dinh et al. 2017, section 3.6) on images of ``shape``.

    Each level: 3 checkerboard couplings, squeeze, 3 channel-wise couplings,
    then half the channels are factored out. The last level (or the first
    whose height or width is odd): 4 checkerboard couplings. Every coupling
    is followed by act-norm.
    """
    n_channels, height, width = shape

    def checkers(channels, h, w, count):
        layers = []
        for k in range(count):
            layers += [
                _coupling(checkerboard_mask(h, w, k % 2), channels, hidden_channels, n_blocks),
                ActNorm(channels),
            ]
        return layers

    if n_levels == 1 or not _can_squeeze(shape):
        return Compose(*checkers(n_channels, height, width, 4), Flatten(shape))
    squeezed = (4 * n_channels, height // 2, width // 2)
    channelwise = []
    for k in range(3):
        channelwise += [_coupling(channel_mask(squeezed[0], k % 2), squeezed[0], hidden_channels, n_blocks)]
        channelwise += [ActNorm(squeezed[0])]
    level = Compose(*checkers(n_channels, height, width, 3), Squeeze(), *channelwise)
    inner_shape = (squeezed[0] - squeezed[0] // 2, *squeezed[1:])
    return MultiScale(level, _realnvp(inner_shape, n_levels - 1, hidden_channels, n_blocks), squeezed)


def _glow(shape, n_levels, n_steps, hidden_channels, n_blocks):
    """Glow's multi-scale transform (Kingma and Dhariwal 2018, figure 2) on images of ``shape``.

    Each level: squeeze, then ``n_steps`` of act-norm, invertible 1x1
    convolution and affine coupling; half the channels are then factored out,
    except at the last level (or when the squeezed height or width is odd),
    with Glow's learned conditional prior ``N(mu(h), sigma(h))`` given the
    kept half ``h`` (an affine coupling of the factored half).
    """
    if not _can_squeeze(shape):
        raise ValueError(f"Glow needs even image height and width, got images of shape {shape}.")
    n_channels, height, width = shape
    squeezed = (4 * n_channels, height // 2, width // 2)
    steps = []
    for _ in range(n_steps):
        steps += [
            ActNorm(squeezed[0]),
            InvertibleConv1x1(squeezed[0]),
            _coupling(channel_mask(squeezed[0]), squeezed[0], hidden_channels, n_blocks),
        ]
    if n_levels == 1 or not _can_squeeze(squeezed):
        return Compose(Squeeze(), *steps, Flatten(squeezed))
    # Glow's learned prior of the factored-out half, N(mu(kept), sigma(kept)),
    # written as an affine coupling of that half conditioned on the kept half.
    prior = _coupling(channel_mask(squeezed[0], 1), squeezed[0], hidden_channels, n_blocks)
    level = Compose(Squeeze(), *steps, prior)
    inner_shape = (squeezed[0] // 2, *squeezed[1:])
    return MultiScale(level, _glow(inner_shape, n_levels - 1, n_steps, hidden_channels, n_blocks), squeezed)


class _ConvFlowDensity(ImageFlowDensity):
    _parameter_constraints = {
        **ImageFlowDensity._parameter_constraints,
        "n_levels": _POSITIVE_INT,
        "hidden_channels": _POSITIVE_INT,
        "n_blocks": [Interval(Integral, 0, None, closed="left")],
    }


@_doc
class RealNVPImageDensity(_ConvFlowDensity):
    """Multi-scale RealNVP for images (Dinh et al. 2017).

    Checkerboard and channel-wise affine couplings with convolutional ResNet
    conditioners, squeeze, and the multi-scale architecture that factors half
    of the dimensions out at each level; standard normal base.

    Parameters
    ----------
    n_levels : int, default=2
        Scales; each but the last ends by squeezing and factoring out half the
        channels. Fewer are used when a squeeze would meet an odd size.
    hidden_channels : int, default=32
        Width of the conditioners.
    n_blocks : int, default=2
        Residual blocks per conditioner.{image}{training}

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
    >>> from skflow.image import RealNVPImageDensity
    >>> from skflow._image import bits_per_dim
    >>> X = load_digits().images[:100].astype(int)  # (100, 8, 8), values 0..16
    >>> est = RealNVPImageDensity(n_bins=17, hidden_channels=8, n_blocks=1,
    ...                           max_epochs=2, random_state=0).fit(X)
    >>> est.sample(2, random_state=0).shape
    (2, 8, 8)
    >>> bits_per_dim(est, X) > 0
    True
    """

    def __init__(
        self,
        *,
        n_levels=2,
        hidden_channels=32,
        n_blocks=2,
        image_shape=None,
        n_bins=None,
        dequantization="uniform",
        logit_alpha=0.05,
        n_score_draws=4,
        max_epochs=100,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.0,
        validation_fraction=0.1,
        patience=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.n_levels = n_levels
        self.hidden_channels = hidden_channels
        self.n_blocks = n_blocks
        self.image_shape = image_shape
        self.n_bins = n_bins
        self.dequantization = dequantization
        self.logit_alpha = logit_alpha
        self.n_score_draws = n_score_draws
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _build_image_flow(self, image_shape):
        transform = _realnvp(image_shape, self.n_levels, self.hidden_channels, self.n_blocks)
        return Flow(transform, StandardNormal(int(image_shape[0] * image_shape[1] * image_shape[2])))


@_doc
class GlowDensity(_ConvFlowDensity):
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
        Flow steps per level.
    hidden_channels : int, default=32
        Width of the conditioners.
    n_blocks : int, default=1
        Residual blocks per conditioner.{image}{training}

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
    >>> from skflow.image import GlowDensity
    >>> digits = load_digits()
    >>> X = digits.data[:100]  # flat (100, 64), values 0..16
    >>> est = GlowDensity(image_shape=(1, 8, 8), n_bins=17, n_steps=2,
    ...                   hidden_channels=8, max_epochs=2, random_state=0).fit(X)
    >>> est.sample(3, random_state=0).shape
    (3, 64)
    """

    _parameter_constraints = {**_ConvFlowDensity._parameter_constraints, "n_steps": _POSITIVE_INT}

    def __init__(
        self,
        *,
        n_levels=2,
        n_steps=4,
        hidden_channels=32,
        n_blocks=1,
        image_shape=None,
        n_bins=None,
        dequantization="uniform",
        logit_alpha=0.05,
        n_score_draws=4,
        max_epochs=100,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.0,
        validation_fraction=0.1,
        patience=10,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.n_levels = n_levels
        self.n_steps = n_steps
        self.hidden_channels = hidden_channels
        self.n_blocks = n_blocks
        self.image_shape = image_shape
        self.n_bins = n_bins
        self.dequantization = dequantization
        self.logit_alpha = logit_alpha
        self.n_score_draws = n_score_draws
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _build_image_flow(self, image_shape):
        transform = _glow(image_shape, self.n_levels, self.n_steps, self.hidden_channels, self.n_blocks)
        return Flow(transform, StandardNormal(int(image_shape[0] * image_shape[1] * image_shape[2])))
