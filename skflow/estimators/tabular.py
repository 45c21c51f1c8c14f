"""Tabular density estimators: MADE, MAF, IAF, NSF and RealNVP.

Each is a parameter list and a flow builder over :class:`skflow.estimators.density.FlowDensity`.
The autoregressive and coupling flows share one layer each; what differs is the
one-dimensional map they apply (affine or rational-quadratic spline) and the
direction (IAF is MAF inverted).
"""

import re
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from ..models.distributions import DiagonalNormal, GaussianMixture, MADEMixture, StandardNormal
from ..models.flow import Flow
from ..transforms import (
    MLP,
    Affine,
    BatchNorm,
    Compose,
    Coupling,
    Inverse,
    MaskedAutoregressive,
    alternating_masks,
    reversing_order,
)
from ..transforms.splines import RationalQuadraticSpline
from .density import FlowDensity, parameters, training_doc

__all__ = ["IAFDensity", "MADEDensity", "MAFDensity", "NSFDensity", "RealNVPDensity"]

_DATA_DOC = """
    dequantize : "auto" or bool, default="auto"
        "auto"/True: integer-valued columns get uniform noise ``U(-1/2, 1/2)``
        during training, so the density does not collapse onto the integers;
        ``score_samples`` evaluates the dequantized density at the integer and
        ``sample`` rounds those columns. False: every column is continuous.
    point_mass_noise : float, default=0.0
        Standard deviation (in units of the column's standard deviation) of
        Gaussian noise added during training to columns where one value holds
        at least 10% of the rows (see ``standardizer_.point_mass_``): missing
        value codes, clipped readings, common counts. A flow would otherwise
        grow a spike there. The fitted density is then that of the smoothed
        data, exactly normalised. 0 leaves the data as they are.
    context_noise : float, default=0.0
        For a density fitted with a continuous ``context``: standard deviation
        of Gaussian noise added to the standardised context of every training
        row, drawn afresh each epoch (noise regularisation of a conditional
        density, Rothfuss et al. 2019), which smooths ``p(x | context)`` along
        the context. Validation, scoring and sampling use the context as
        given."""

_ATTRIBUTES_DOC = """
    net_ : skflow.training.FlowNet
        The fitted skorch network; ``net_.module_`` is the torch flow, mapping
        standardised data to the base space.
    history_ : skorch.History
        Per-epoch training (and validation) loss, in nats per row of
        standardised data.
    n_iter_ : int
        Number of epochs run. For a copy trained in a stacked ensemble
        (``FlowMixture``, ``FlowRegressor``, ``FlowOutlierDetector``), the
        epoch at which its own early stopping ended it; ``history_`` is then
        the stack's, shared by all copies.
    standardizer_ : skflow.data.Standardizer
        Per-feature centring and scaling (its log-determinant is added to
        every log-density) and the detected integer and point-mass columns.
    classes_ : ndarray of shape (n_classes,) or None
        Class labels seen in fit (None when fitted without ``y``).
    class_prior_ : ndarray of shape (n_classes,) or None
        Class frequencies in the training data.
    layout_ : None
        Tabular data have no image layout.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X was a DataFrame with string column names."""

_POSITIVE_INT = [Interval(Integral, 1, None, closed="left")]
_NON_NEGATIVE = [Interval(Real, 0, None, closed="left")]

_TABULAR_CONSTRAINTS = {
    **FlowDensity._parameter_constraints,
    "hidden_features": [tuple, list],
    "dequantize": [StrOptions({"auto"}), "boolean"],
    "point_mass_noise": _NON_NEGATIVE,
    "context_noise": _NON_NEGATIVE,
}


_STACKED_DOC = """
    batch_norm : bool, default=False
        Insert a batch-norm bijection between layers.
    base : {"normal", "diagonal", "mixture", "made_mixture"}, default="normal"
        Base density (see :class:`MAFDensity`).
{components}"""
_COMPONENTS_DOC = """
    n_components : int, default=10
        Components of the mixture bases.{common}"""


def _doc(cls):
    cls.__doc__ = (
        re.sub(
            r"\n *\{components\}",
            lambda _: _COMPONENTS_DOC,
            re.sub(r"\n *\{stacked\}", lambda _: _STACKED_DOC, cls.__doc__),
        )
        .replace(
            "{common}",
            _DATA_DOC
            + training_doc(**dict.fromkeys(["max_epochs", "batch_size", "lr", "patience"], '"auto"')),
        )
        .replace("{attributes}", _ATTRIBUTES_DOC)
    )
    return cls


@parameters
class _TabularDensity(FlowDensity):
    """The data parameters every tabular density shares (documented in each estimator)."""

    _parameter_constraints = _TABULAR_CONSTRAINTS
    _missing = True

    hidden_features: tuple = (128, 128)
    dequantize: object = "auto"
    point_mass_noise: float = 0.0
    context_noise: float = 0.0


@_doc
@parameters
class MADEDensity(_TabularDensity):
    """Density estimation with one MADE (Germain et al. 2015).

    Each conditional ``p(x_i | x_<i)`` is a Gaussian (``n_components=1``) or a
    mixture of Gaussians whose parameters come from one masked autoencoder.

    Parameters
    ----------
    hidden_features : tuple of int, default=(128, 128)
        Widths of the MADE's hidden layers.
    n_components : int, default=1
        Gaussian components per conditional (1: MADE, >1: MADE MoG).
    order : {"natural", "random"}, default="natural"
        Autoregressive order of the features; "random" draws one from
        ``random_state``.{common}

    Attributes
    ----------{attributes}

    See Also
    --------
    MAFDensity : A stack of MADEs; usually a better density.
    sklearn.mixture.GaussianMixture : A classical baseline.

    References
    ----------
    Germain, Gregor, Murray and Larochelle (2015). MADE: Masked Autoencoder
    for Distribution Estimation. ICML.

    Examples
    --------
    >>> import numpy as np
    >>> from skflow import MADEDensity
    >>> X = np.random.default_rng(0).standard_gamma(2.0, size=(300, 3))
    >>> made = MADEDensity(n_components=3, max_epochs=20, random_state=0).fit(X)
    >>> bool(made.score(X) > -10)
    True
    """

    _parameter_constraints = {
        **_TABULAR_CONSTRAINTS,
        "n_components": _POSITIVE_INT,
        "order": [StrOptions({"natural", "random"})],
    }

    n_components: int = 1
    order: str = "natural"

    def _build_flow(self, n_features, context_features):
        order = torch.randperm(n_features) if self.order == "random" else torch.arange(n_features)
        hidden = tuple(self.hidden_features)
        if self.n_components == 1:
            layer = MaskedAutoregressive(n_features, hidden, order, Affine(), context_features)
            return Flow(Compose(layer), StandardNormal(n_features))
        base = MADEMixture(n_features, self.n_components, hidden, order, context_features=context_features)
        return Flow(Compose(), base)


def _base_distribution(name, n_features, n_components, hidden_features, context_features):
    builders = {
        "normal": lambda: StandardNormal(n_features),
        "diagonal": lambda: DiagonalNormal(n_features),
        "mixture": lambda: GaussianMixture(n_features, n_components),
        "made_mixture": lambda: MADEMixture(
            n_features, n_components, hidden_features, context_features=context_features
        ),
    }
    return builders[name]()


@parameters
class _StackedFlowDensity(_TabularDensity):
    """Shared constructor of the flows that stack ``n_transforms`` layers.

    Subclasses define ``_layer(k, n_features, context_features)``.
    """

    _parameter_constraints = {
        **_TABULAR_CONSTRAINTS,
        "n_transforms": _POSITIVE_INT,
        "batch_norm": ["boolean"],
        "base": [StrOptions({"normal", "diagonal", "mixture", "made_mixture"})],
        "n_components": _POSITIVE_INT,
    }

    n_transforms: int = 5
    batch_norm: bool = False
    base: str = "normal"
    n_components: int = 10

    def _build_flow(self, n_features, context_features):
        layers = []
        for k in range(self.n_transforms):
            layers.append(self._layer(k, n_features, context_features))
            if self.batch_norm and k < self.n_transforms - 1:
                layers.append(BatchNorm(n_features))
        hidden = tuple(self.hidden_features)
        base = _base_distribution(self.base, n_features, self.n_components, hidden, context_features)
        return Flow(Compose(*layers), base)

    def _autoregressive(self, k, n_features, context_features, univariate=None):
        order = reversing_order(n_features, k)
        return MaskedAutoregressive(
            n_features, tuple(self.hidden_features), order, univariate, context_features
        )


@_doc
@parameters
class MAFDensity(_StackedFlowDensity):
    """Masked autoregressive flow density (Papamakarios et al. 2017).

        A stack of ``n_transforms`` MADE-parametrised affine autoregressive
        layers, ``z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))``, reversing the
        feature order between layers. Scoring takes one pass; sampling takes
        ``n_features`` passes per layer. Log-scales are bounded and the MADEs see
        softly bounded inputs, so held-out rows beyond the training range get
        Gaussian-like tails rather than exploding log-densities.

        Parameters
        ----------
        n_transforms : int, default=5
            Number of autoregressive layers.
        hidden_features : tuple of int, default=(128, 128)
            Hidden widths of each MADE.
        batch_norm : bool, default=False
            Insert a batch-norm bijection between layers (the paper's setup).
        base : {"normal", "diagonal", "mixture", "made_mixture"}, default="made_mixture"
            Base density: standard normal, learned diagonal Gaussian, learned
            mixture of ``n_components`` diagonal Gaussians, or a MADE MoG (the
            paper's MAF MoG; it adds one ``n_features``-pass MADE to sampling).
            MAF's is the only stacked flow whose default is not "normal"; why:
            ``benchmarks/results/defaults.md``.
    {components}

        Attributes
        ----------{attributes}

        See Also
        --------
        NSFDensity : The same layers with spline maps.
        RealNVPDensity : Coupling flow; fast sampling too.
        MADEDensity : A single autoregressive layer.

        References
        ----------
        Papamakarios, Pavlakou and Murray (2017). Masked Autoregressive Flow for
        Density Estimation. NeurIPS.

        Examples
        --------
        >>> from sklearn.datasets import load_wine
        >>> from skflow import MAFDensity
        >>> X = load_wine().data
        >>> maf = MAFDensity(n_transforms=2, max_epochs=10, random_state=0).fit(X)
        >>> maf.score_samples(X[:2]).shape
        (2,)
        >>> maf.sample(4, random_state=0).shape
        (4, 13)
    """

    base: str = "made_mixture"  # the only default that differs from the other stacked flows (MAF MoG)

    def _layer(self, k, n_features, context_features):
        return self._autoregressive(k, n_features, context_features)


@_doc
class IAFDensity(_StackedFlowDensity):
    """Inverse autoregressive flow density (Kingma et al. 2016).

        The MAF layer run backwards: sampling computes
        ``x_i = z_i * exp(alpha_i(z_<i)) + mu_i(z_<i)`` from the noise ``z`` in one
        pass per layer, while scoring a data point must recover ``z`` one feature
        at a time, ``n_features`` sequential passes per layer (and so does every
        training step, which scores the training data).

        Choose IAF when drawing samples is the frequent operation (or the flow is
        fitted by reverse KL, see :class:`~skflow.estimators.variational.VariationalDensity`),
        MAF when evaluating densities is; both model the same family
        (``benchmarks/results/iaf_vs_maf.md`` measures the ratios).

        Parameters
        ----------
        n_transforms : int, default=5
            Number of inverse autoregressive layers.
        hidden_features : tuple of int, default=(128, 128)
            Hidden widths of each MADE (which reads the noise side ``z``).
        batch_norm : bool, default=False
            Insert a batch-norm bijection between layers.
        base : {"normal", "diagonal", "mixture", "made_mixture"}, default="normal"
            Base density (see :class:`MAFDensity`); "made_mixture" samples in
            ``n_features`` passes, which undoes IAF's fast sampling.
    {components}

        Attributes
        ----------{attributes}

        See Also
        --------
        MAFDensity : Same family; fast scoring and training, slow sampling.
        RealNVPDensity : Coupling flow; fast in both directions.

        References
        ----------
        Kingma, Salimans, Jozefowicz, Chen, Sutskever and Welling (2016).
        Improved Variational Inference with Inverse Autoregressive Flow. NeurIPS.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from skflow import IAFDensity
        >>> X = load_iris().data
        >>> iaf = IAFDensity(n_transforms=2, hidden_features=(32,), max_epochs=5, random_state=0).fit(X)
        >>> iaf.score_samples(X[:2]).shape
        (2,)
        >>> iaf.sample(3, random_state=0).shape
        (3, 4)
    """

    def _layer(self, k, n_features, context_features):
        return Inverse(self._autoregressive(k, n_features, context_features))


@_doc
@parameters
class NSFDensity(_StackedFlowDensity):
    """Autoregressive neural spline flow density (Durkan et al. 2019).

        MAF's layers with a monotone rational-quadratic spline of ``spline_bins``
        bins on ``[-spline_bound, spline_bound]`` in place of the affine map, and
        identity tails outside it; the MADE gives each feature's bin widths,
        heights and knot derivatives from the features before it. Splines bend
        each conditional into skewed or multimodal shapes that one affine layer
        cannot, so fewer layers reach a given fit. Scoring takes one pass;
        sampling ``n_features`` passes per layer.

        Parameters
        ----------
        n_transforms : int, default=5
            Number of autoregressive spline layers.
        hidden_features : tuple of int, default=(128, 128)
            Hidden widths of each MADE.
        spline_bins : int, default=8
            Bins of each spline.
        spline_bound : float, default=5.0
            The splines act on ``[-spline_bound, spline_bound]`` (standardised
            units); outside it each layer is the identity.
    {stacked}

        Attributes
        ----------{attributes}

        See Also
        --------
        MAFDensity : Affine autoregressive layers.
        RealNVPDensity : ``coupling_map="spline"`` gives a coupling spline flow.

        References
        ----------
        Durkan, Bekasov, Murray and Papamakarios (2019). Neural Spline Flows. NeurIPS.

        Examples
        --------
        >>> from sklearn.datasets import load_wine
        >>> from skflow import NSFDensity
        >>> X = load_wine().data[:, :5]
        >>> nsf = NSFDensity(n_transforms=1, spline_bins=4, max_epochs=5, random_state=0).fit(X)
        >>> log_p = nsf.score_samples(X[:2])  # log p(x), in the units of X
        >>> nsf.sample(3, random_state=0).shape
        (3, 5)
    """

    _parameter_constraints = {
        **_StackedFlowDensity._parameter_constraints,
        "spline_bins": [Interval(Integral, 2, None, closed="left")],
        "spline_bound": [Interval(Real, 0, None, closed="neither")],
    }

    spline_bins: int = 8
    spline_bound: float = 5.0

    def _layer(self, k, n_features, context_features):
        spline = RationalQuadraticSpline(self.spline_bins, self.spline_bound)
        return self._autoregressive(k, n_features, context_features, spline)


@_doc
@parameters
class RealNVPDensity(_StackedFlowDensity):
    """RealNVP density with coupling layers (Dinh et al. 2017).

        Each layer keeps half of the features (alternating by index parity) and
        maps the other half elementwise with parameters from an MLP of the kept
        half: affine with bounded log-scales (RealNVP) or a rational-quadratic
        spline (a coupling neural spline flow, ``coupling_map="spline"``). Scoring
        and sampling both take one pass.

        Parameters
        ----------
        n_transforms : int, default=5
            Number of coupling layers.
        hidden_features : tuple of int, default=(128, 128)
            Hidden widths of each coupling's MLP.
        coupling_map : {"affine", "spline"}, default="affine"
            The elementwise map of the transformed half; "spline" is an 8-bin
            rational-quadratic spline on ``[-5, 5]`` with identity tails.
    {stacked}

        Attributes
        ----------{attributes}

        See Also
        --------
        MAFDensity : Autoregressive flow; usually a better density, but sampling takes
            ``n_features`` passes per layer.
        NSFDensity : Autoregressive spline flow; ``coupling_map="spline"`` is its coupling form.

        References
        ----------
        Dinh, Sohl-Dickstein and Bengio (2017). Density estimation using Real NVP.
        ICLR.

        Examples
        --------
        >>> from sklearn.datasets import load_wine
        >>> from skflow import RealNVPDensity
        >>> X = load_wine().data
        >>> nvp = RealNVPDensity(n_transforms=2, coupling_map="spline", max_epochs=10,
        ...                      random_state=0).fit(X)
        >>> nvp.score(X) < 0
        True
    """

    _parameter_constraints = {
        **_StackedFlowDensity._parameter_constraints,
        "coupling_map": [StrOptions({"affine", "spline"})],
    }

    coupling_map: str = "affine"

    def _layer(self, k, n_features, context_features):
        univariate = Affine() if self.coupling_map == "affine" else RationalQuadraticSpline()
        mask = alternating_masks(n_features, self.n_transforms)[k]
        conditioner = MLP(
            n_features + context_features, univariate.n_params * n_features, tuple(self.hidden_features)
        )
        return Coupling(mask, conditioner, univariate)
