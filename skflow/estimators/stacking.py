"""Stacked densities: classical densities mixed in with seeded flows, weights by held-out likelihood.

Smyth and Wolpert (1999) combine density estimators as a mixture
``p(x) = sum_c w_c p_c(x)`` whose weights maximise the likelihood of rows each
component did not train on. :class:`~skflow.FlowMixture` uses it on small
numeric tables: its seeded flows hold out their validation rows anyway, so
those rows give every flow a held-out log-density for free; the classical
densities (by default a Gaussian mixture and a Gaussian kernel density, each
tuned by 3-fold cross-validation) are refitted without the same rows, and the
weights come from EM on the pooled held-out log-densities. The final mixture
is the flows' equal-weight mixture with weight ``w_flows`` beside each
classical density fitted on all rows.

The classical densities live in the flows' standardised units (the members'
``standardizer_``), fitted on rows whose integer-valued columns carry the same
uniform dequantization noise the flows train on, so every component is a
density of the same continuous variable and the scaling's log-determinant is
added once for all.
"""

import numpy as np
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

__all__ = ["AUTO_MAX_ROWS", "AUTO_MIN_ROWS", "default_references", "fit_stack", "stacking_weights"]

#: ``stack="auto"`` mixes in the classical densities on tables of at most this many rows.
AUTO_MAX_ROWS = 10_000
#: Fewest training rows for ``stack="auto"``.
AUTO_MIN_ROWS = 30
#: Gaussian mixture sizes and kernel bandwidths (standardised units) searched by ``stack="auto"``.
GMM_COMPONENTS = (1, 2, 3, 5, 8)
KDE_BANDWIDTHS = np.logspace(-1.5, 0.5, 12)


def default_references(n_rows, random_state):
    """``stack="auto"``'s densities: a GaussianMixture (1 to 8 components, full or diagonal
    covariances) and a Gaussian KernelDensity (12 bandwidths, 0.03 to 3), each tuned by 3-fold CV."""
    components = [c for c in GMM_COMPONENTS if 10 * c <= n_rows] or [1]
    gmm = GaussianMixture(reg_covar=1e-4, max_iter=500, random_state=random_state)
    return [
        GridSearchCV(gmm, {"n_components": components, "covariance_type": ["full", "diag"]}, cv=3),
        GridSearchCV(KernelDensity(), {"bandwidth": KDE_BANDWIDTHS}, cv=3),
    ]


def stacking_weights(log_densities, n_iter=500, tol=1e-10):
    """Mixture weights maximising ``sum_i log sum_c w_c exp(L[i, c])`` (EM; ``L`` of shape (n, C))."""
    L = np.asarray(log_densities, dtype=np.float64)
    weights = np.full(L.shape[1], 1.0 / L.shape[1])
    previous = -np.inf
    for _ in range(n_iter):
        joint = L + np.log(np.maximum(weights, 1e-300))
        total = logsumexp(joint, axis=1, keepdims=True)
        weights = np.exp(joint - total).mean(axis=0)
        objective = float(total.mean())
        if objective - previous < tol:
            break
        previous = objective
    return weights / weights.sum()


def fit_stack(references, Z, noise_width, members, validation_rows, rng):
    """Fit ``references`` in standardised units and the stacking weights of flows and references.

    Parameters
    ----------
    references : list of estimators
        Unfitted densities with ``fit`` and ``score_samples`` (e.g. a
        ``GridSearchCV`` over one).
    Z : ndarray of shape (n_samples, n_features)
        The training rows, standardised as the flows saw them.
    noise_width : ndarray of shape (n_features,) or None
        Width of the uniform dequantization noise per column (0: none).
    members : list of fitted FlowDensity
        The seeded flows; member ``k`` did not train on ``validation_rows[k]``.
    validation_rows : list of ndarray of int
    rng : numpy Generator

    Returns
    -------
    fitted : list of estimators
        ``references`` fitted on all rows (in standardised units); a search's
        best estimator in place of the search.
    weights : ndarray of shape (1 + len(references),)
        The flows' total weight, then each reference's.
    """
    noisy = Z if noise_width is None else Z + noise_width * rng.uniform(-0.5, 0.5, Z.shape)
    fitted = [clone(reference).fit(noisy) for reference in references]
    fitted = [getattr(reference, "best_estimator_", reference) for reference in fitted]
    held_out = []
    for member, valid in zip(members, validation_rows):
        train = np.setdiff1d(np.arange(len(Z)), valid)
        columns = [member._log_prob(Z[valid])]
        columns += [clone(reference).fit(noisy[train]).score_samples(Z[valid]) for reference in fitted]
        held_out.append(np.column_stack(columns))
    return fitted, stacking_weights(np.concatenate(held_out))
