"""Inverse autoregressive flow (IAF) as a density estimator."""

from .tabular import _doc, _StackedFlowDensity
from .transforms import Inverse, MaskedAffineAutoregressive, reversing_order

__all__ = ["IAFDensity"]


@_doc
class IAFDensity(_StackedFlowDensity):
    """Inverse autoregressive flow density (Kingma et al. 2016).

    The MAF layer run backwards: sampling computes
    ``x_i = z_i * exp(alpha_i(z_<i)) + mu_i(z_<i)`` from the noise ``z`` in one
    pass per layer, while scoring a data point must recover ``z`` one feature
    at a time, ``n_features`` sequential passes per layer (and so does every
    training step, which scores the training data).

    MAF is the mirror image: one pass to score, ``n_features`` passes to
    sample. Choose IAF when drawing samples is the frequent operation (or the
    flow is fitted by reverse KL, see :class:`~skflow.variational.VariationalDensity`),
    MAF when evaluating densities is; both model the same family. The cost of
    the slow direction grows linearly with ``n_features``;
    ``benchmarks/results/iaf_vs_maf.md`` measures the ratios.

    Parameters
    ----------
    n_transforms : int, default=5
        Number of inverse autoregressive layers.
    hidden_features : tuple of int, default=(128, 128)
        Hidden widths of each MADE.
    batch_norm : bool, default=False
        Insert a batch-norm bijection between layers.
    base : {"normal", "diagonal", "mixture", "made_mixture"}, default="normal"
        Base density (see :class:`~skflow.tabular.MAFDensity`); "made_mixture"
        samples in ``n_features`` passes, which undoes IAF's fast sampling.
    n_components : int, default=10
        Components of the mixture bases.
    {common}

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

    Papamakarios, Pavlakou and Murray (2017). Masked Autoregressive Flow for
    Density Estimation. NeurIPS.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skflow.iaf import IAFDensity
    >>> X = load_iris().data
    >>> iaf = IAFDensity(n_transforms=2, hidden_features=(32,), max_epochs=5, random_state=0).fit(X)
    >>> iaf.score_samples(X[:2]).shape
    (2,)
    >>> iaf.sample(3, random_state=0).shape
    (3, 4)
    """

    def _layer(self, k, n_features):
        order = reversing_order(n_features, k)
        return Inverse(MaskedAffineAutoregressive(n_features, tuple(self.hidden_features), order))
