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
``standardizer_``), fitted on rows that carry the same training noise the
flows see (uniform dequantization noise on integer-valued columns, Gaussian
smoothing on point-mass columns), so every component is a density of the same
continuous variable and the scaling's log-determinant is added once for all.
Each is mixed with the flows' wide Gaussian tail guard of weight 0.001, as
every flow is, so no component can give an unseen row an absurdly low score.
The weights are the EM estimate under a Dirichlet prior of one pseudo-row per
component, so that no weight is exactly 0 and a few held-out rows cannot make
them degenerate.
"""

import copy

import numpy as np
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from .density import TAIL_SCALE, _with_tail_guard

__all__ = [
    "AUTO_MAX_ROWS",
    "AUTO_MIN_ROWS",
    "default_references",
    "fit_stack",
    "reference_log_density",
    "sample_reference",
    "stacking_weights",
    "training_noise",
]

#: ``stack="auto"`` mixes in the classical densities on tables of at most this many rows.
AUTO_MAX_ROWS = 5_000
#: Fewest training rows for ``stack="auto"``.
AUTO_MIN_ROWS = 30
#: Gaussian mixture sizes and kernel bandwidths (standardised units) searched by ``stack="auto"``.
GMM_COMPONENTS = (1, 2, 3, 5, 8)
KDE_BANDWIDTHS = np.logspace(-1.5, 0.5, 12)
#: Dirichlet pseudo-rows per component in the weights' EM.
PRIOR_ROWS = 1.0


def default_references(n_rows, random_state):
    """``stack="auto"``'s densities: a GaussianMixture (1 to 8 components, full or diagonal
    covariances) and a Gaussian KernelDensity (12 bandwidths, 0.03 to 3), each tuned by shuffled
    3-fold CV (rows sorted by class would otherwise make each fold hold out a class)."""
    components = [c for c in GMM_COMPONENTS if 10 * c <= n_rows] or [1]
    gmm = GaussianMixture(reg_covar=1e-4, max_iter=500, random_state=random_state)
    folds = KFold(3, shuffle=True, random_state=random_state)
    return [
        GridSearchCV(gmm, {"n_components": components, "covariance_type": ["full", "diag"]}, cv=folds),
        GridSearchCV(KernelDensity(), {"bandwidth": KDE_BANDWIDTHS}, cv=folds),
    ]


def stacking_weights(log_densities, n_iter=500, tol=1e-10, prior_rows=PRIOR_ROWS):
    """Mixture weights maximising ``sum_i log sum_c w_c exp(L[i, c])`` plus a Dirichlet prior of
    ``prior_rows`` pseudo-rows per component (EM; ``L`` of shape (n, C))."""
    L = np.asarray(log_densities, dtype=np.float64)
    n, n_components = L.shape
    weights = np.full(n_components, 1.0 / n_components)
    previous = -np.inf
    for _ in range(n_iter):
        joint = L + np.log(weights)
        total = logsumexp(joint, axis=1, keepdims=True)
        weights = (np.exp(joint - total).sum(axis=0) + prior_rows) / (n + n_components * prior_rows)
        objective = float(total.sum() + prior_rows * np.log(weights).sum())
        if objective - previous < tol * n:
            break
        previous = objective
    return weights / weights.sum()


def reference_log_density(reference, Z, tail_weight):
    """Log-density of standardised rows ``Z`` under a fitted classical density, tail guard included."""
    return _with_tail_guard(reference.score_samples(Z), Z, tail_weight)


def sample_reference(reference, n_samples, rng, tail_weight):
    """``n_samples`` standardised rows from a fitted classical density with its tail guard, in random
    order (a GaussianMixture returns its draws sorted by component), seeded from ``rng``."""
    seed = int(rng.randint(np.iinfo(np.int32).max))
    if isinstance(reference, GaussianMixture):  # it draws with its own random_state: use a copy's
        Z = copy.copy(reference).set_params(random_state=seed).sample(n_samples)[0]
    else:
        Z = reference.sample(n_samples, random_state=seed)
    draw = np.random.RandomState(seed)
    Z = np.asarray(Z, dtype=np.float64)[draw.permutation(n_samples)]
    wide = draw.random_sample(n_samples) < tail_weight
    Z[wide] = TAIL_SCALE * draw.standard_normal((int(wide.sum()), Z.shape[1]))
    return Z


def training_noise(member, Z, rng):
    """``Z`` (standardised rows) with the noise ``member`` trained on: uniform dequantization noise on
    integer-valued columns, Gaussian smoothing of point-mass columns."""
    width, smoothing = member.standardizer_.noise_width, member._smoothing_std()
    noisy = Z if width is None else Z + width * rng.uniform(-0.5, 0.5, Z.shape)
    return noisy if smoothing is None else noisy + np.asarray(smoothing) * rng.standard_normal(Z.shape)


def fit_stack(references, Z, members, validation_rows, rng):
    """Fit ``references`` in standardised units and the stacking weights of flows and references.

    Parameters
    ----------
    references : list of estimators
        Unfitted densities with ``fit`` and ``score_samples`` (e.g. a
        ``GridSearchCV`` over one).
    Z : ndarray of shape (n_samples, n_features)
        The training rows, standardised as the flows saw them; the references
        are fitted on them with the flows' training noise added
        (:func:`training_noise`).
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
    noisy = training_noise(members[0], Z, rng)
    tail = members[0]._tail_weight
    fitted = [clone(reference).fit(noisy) for reference in references]
    fitted = [getattr(reference, "best_estimator_", reference) for reference in fitted]
    held_out = []
    for member, valid in zip(members, validation_rows):
        train = np.setdiff1d(np.arange(len(Z)), valid)
        columns = [member._log_prob(Z[valid])]
        for reference in fitted:
            refit = clone(reference).fit(noisy[train])
            columns.append(reference_log_density(refit, Z[valid], tail))
        held_out.append(np.column_stack(columns))
    return fitted, stacking_weights(np.concatenate(held_out))
