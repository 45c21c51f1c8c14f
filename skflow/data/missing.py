"""Missing cells (NaN): the proposal that fills them, for importance-weighted marginal likelihoods.

A row with missing cells ``m`` and observed cells ``o`` has the density of the cells it has,
``p(x_o) = integral of p(x_o, x_m) over x_m``. With ``K`` draws ``x_m^k`` from a proposal
``q(x_m | x_o)``,

    log p_K(x_o) = log (1/K) sum_k p(x_o, x_m^k) / q(x_m^k | x_o)

is the log of an unbiased estimate of ``p(x_o)``: its expectation is a lower bound of
``log p(x_o)`` that rises with ``K`` and converges to it (Burda et al. 2016; MIWAE, Mattei and
Frellsen 2019). The same weighted draws give the posterior ``p(x_m | x_o)``: normalised weights
for its mean, resampling for draws (sampling importance resampling).

:class:`GaussianProposal` is ``q``: the conditional ``N(x_m | x_o)`` of a Gaussian fitted to the
standardised training rows by EM (incomplete rows count, through their observed cells), as an
equal mixture of that conditional and the same with twice its standard deviation, so that the
weights stay bounded where the flow has heavier tails than the Gaussian. Discrete columns (the
category codes of a mixed table) are drawn from their training frequencies. The proposal is
fitted once and held fixed: training maximises the same bound with ``K`` draws per row.
"""

import math

import numpy as np
import torch
from scipy.special import ndtri

from .noise import row_uniforms

__all__ = ["GaussianProposal", "check_missing_rows", "fill", "importance_reduce", "observed_mask"]

#: The proposal's two scales of the Gaussian conditional (an equal mixture).
SCALES = (1.0, 2.0)
#: Ridge added to the fitted covariance (in standardised units).
RIDGE = 1e-3
EM_ITERATIONS = 30


def observed_mask(X):
    """Boolean ``(n, d)``: which cells are observed (not NaN)."""
    return ~np.isnan(X)


def check_missing_rows(X):
    """Raise a ValueError when a row has every cell missing (it carries no information to score)."""
    empty = np.flatnonzero(np.isnan(X).all(axis=1))
    if len(empty):
        raise ValueError(
            f"{len(empty)} row(s) have every cell missing (first: row {empty[0]}); a density of "
            "no observed cells is undefined: drop those rows."
        )


def _patterns(observed):
    """Unique rows of the mask and each row's index among them."""
    patterns, index = np.unique(observed, axis=0, return_inverse=True)
    return patterns, index.ravel()


def fit_gaussian(Y, n_iter=EM_ITERATIONS, ridge=RIDGE):
    """Mean and covariance of rows ``Y`` with NaN cells, by EM (Little and Rubin 2002, ch. 11)."""
    n, d = Y.shape
    observed = observed_mask(Y)
    mean = np.where(observed.any(axis=0), np.nanmean(np.where(observed, Y, np.nan), axis=0), 0.0)
    cov = np.diag(np.where(observed.sum(axis=0) > 1, np.nanvar(Y, axis=0), 1.0) + ridge)
    patterns, index = _patterns(observed)
    complete = bool(observed.all())
    for _ in range(1 if complete else n_iter):
        filled, extra = np.where(observed, Y, 0.0), np.zeros((d, d))
        for p, pattern in enumerate(patterns):
            m = ~pattern
            if not m.any():
                continue
            rows, o = index == p, pattern
            gain = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)]).T if o.any() else np.zeros((m.sum(), 0))
            filled[np.ix_(rows, m)] = mean[m] + (Y[np.ix_(rows, o)] - mean[o]) @ gain.T
            extra[np.ix_(m, m)] += rows.sum() * (cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)])
        mean = filled.mean(axis=0)
        centred = filled - mean
        cov = (centred.T @ centred + extra) / n + ridge * np.eye(d)
    return mean, cov


class GaussianProposal:
    """``q(x_m | x_o)`` for rows of standardised values with NaN cells (see the module docstring).

    Parameters
    ----------
    discrete : array-like of bool of shape (n_features,), default=None
        Columns of category codes (integers ``0 .. cardinality - 1``), drawn from
        their training frequencies instead of the Gaussian.
    cardinalities : list of int, default=None
        The number of categories of each discrete column.
    """

    def __init__(self, discrete=None, cardinalities=None):
        self.discrete = discrete
        self.cardinalities = cardinalities

    def fit(self, Z):
        """Fit to rows ``Z`` (NaN: missing)."""
        d = Z.shape[1]
        self.discrete_ = np.zeros(d, bool) if self.discrete is None else np.asarray(self.discrete, bool)
        continuous = ~self.discrete_
        self.mean_ = np.zeros(d)
        self.cov_ = np.eye(d)  # the discrete columns' block stays the identity and is never used
        if continuous.any():
            mean, cov = fit_gaussian(Z[:, continuous])
            self.mean_[continuous] = mean
            self.cov_[np.ix_(continuous, continuous)] = cov
        self.log_frequencies_ = []
        for j, k in zip(np.flatnonzero(self.discrete_), self.cardinalities or []):
            codes = Z[:, j][~np.isnan(Z[:, j])]
            counts = np.bincount(codes[codes >= 0].astype(np.int64), minlength=k)[:k] + 1.0  # add-one
            self.log_frequencies_.append(np.log(counts / counts.sum()))
        return self

    def factors(self, observed):
        """Per row of the boolean mask ``observed``: ``(pattern index, gain, cholesky, log-det)``.

        For each unique pattern, ``gain`` (d, d) maps a row's centred observed values to the
        conditional mean's centred missing values (zero elsewhere); ``cholesky`` (d, d) is the
        lower Cholesky factor of the conditional covariance on the missing continuous cells
        (zero elsewhere); ``log_det`` is the log-determinant of that factor.
        """
        patterns, index = _patterns(observed)
        d = observed.shape[1]
        gains, factors, log_dets = np.zeros((len(patterns), d, d)), np.zeros((len(patterns), d, d)), []
        continuous = ~self.discrete_
        for p, pattern in enumerate(patterns):
            m, o = ~pattern & continuous, pattern & continuous
            log_det = 0.0
            if m.any():
                cov = self.cov_
                gain = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)]).T if o.any() else None
                conditional = cov[np.ix_(m, m)] - (0 if gain is None else gain @ cov[np.ix_(o, m)])
                chol = np.linalg.cholesky(conditional + 1e-9 * np.eye(m.sum()))
                if gain is not None:
                    gains[p][np.ix_(m, o)] = gain
                factors[p][np.ix_(m, m)] = chol
                log_det = float(np.sum(np.log(np.diag(chol))))
            log_dets.append(log_det)
        return index, gains, factors, np.array(log_dets)

    def fill_rows(self, Z, n_draws, seed=0):
        """``n_draws`` fills of each row of ``Z`` (NumPy, float64) and their ``log q``: ``(n, n_draws, d)``,
        ``(n, n_draws)``.

        A row's draws come from a generator seeded by a hash of its values and ``seed`` (as
        :func:`~skflow.data.scoring_noise` does), so a row's score does not depend on the rows
        scored with it. They are stratified (a Latin hypercube: each column's draws of a row take one
        of ``n_draws`` equal strata each), which leaves the estimate unbiased and lowers its variance
        for smooth integrands.
        """
        d = Z.shape[1]
        uniform = row_uniforms(Z, (n_draws, 2 * d + 1), seed)  # normals (by inversion), categories, component
        strata = np.argsort(row_uniforms(Z, (2 * d + 1, n_draws), seed + 1), axis=-1).transpose(0, 2, 1)
        uniform = (strata + uniform) / n_draws
        normal = ndtri(np.clip(uniform[..., :d], 1e-12, 1 - 1e-12))
        tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)
        factors = self.tensors(~np.isnan(Z), "cpu", torch.float64)
        filled, log_q = fill(tensor(Z), factors["index"], factors, tensor(normal), tensor(uniform[..., d:]))
        return filled.numpy(), log_q.numpy()

    def tensors(self, observed, device, dtype):
        """:meth:`factors` as tensors on ``device``, with the proposal's mean and frequencies."""
        index, gains, factors, log_dets = self.factors(observed)
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=device)
        cumulative = [as_tensor(np.cumsum(np.exp(f))) for f in self.log_frequencies_]
        return {
            "index": torch.as_tensor(index, dtype=torch.long, device=device),
            "gain": as_tensor(gains), "cholesky": as_tensor(factors), "log_det": as_tensor(log_dets),
            "mean": as_tensor(self.mean_), "log_frequencies": [as_tensor(f) for f in self.log_frequencies_],
            "cumulative": cumulative, "discrete": [int(j) for j in np.flatnonzero(self.discrete_)],
        }


def fill(x, pattern, factors, normal, uniform):
    """Fill the NaN cells of ``x`` with ``K`` proposal draws each; ``(filled, log q)``.

    Parameters
    ----------
    x : tensor of shape (..., n, d)
        Rows with NaN cells.
    pattern : long tensor of shape (..., n)
        Each row's index into the patterns of ``factors`` (:meth:`GaussianProposal.tensors`).
    factors : dict
        :meth:`GaussianProposal.tensors`.
    normal : tensor of shape (..., n, K, d)
        Standard normal draws (those of observed or discrete cells are ignored).
    uniform : tensor of shape (..., n, K, d + 1)
        Uniform draws: the discrete cells' categories, and (last) the mixture component.

    Returns
    -------
    filled : tensor of shape (..., n, K, d)
        ``x`` with its missing cells drawn (observed cells unchanged).
    log_q : tensor of shape (..., n, K)
        ``log q(x_m | x_o)`` of each draw; 0 for a complete row.
    """
    missing = torch.isnan(x)
    mean = factors["mean"]
    centred = torch.where(missing, torch.zeros_like(x), x - mean)
    gain, chol = factors["gain"][pattern], factors["cholesky"][pattern]
    conditional = mean + (gain @ centred.unsqueeze(-1)).squeeze(-1)  # (..., n, d)
    wide = uniform[..., -1] >= 0.5
    scale = torch.where(wide, SCALES[1], SCALES[0]).to(x.dtype)  # (..., n, K)
    deviation = (chol.unsqueeze(-3) @ normal.unsqueeze(-1)).squeeze(-1)  # (..., n, K, d)
    draws = conditional.unsqueeze(-2) + scale.unsqueeze(-1) * deviation
    continuous_missing = missing.clone()
    log_q = torch.zeros(normal.shape[:-1], dtype=x.dtype, device=x.device)
    for j, cumulative, log_frequency in zip(factors["discrete"], factors["cumulative"],
                                            factors["log_frequencies"]):
        codes = torch.searchsorted(cumulative, uniform[..., j].contiguous() * cumulative[-1])
        codes = codes.clamp(max=len(cumulative) - 1)
        draws[..., j] = codes.to(x.dtype)
        log_q = log_q + torch.where(missing[..., j].unsqueeze(-1), log_frequency[codes], 0.0)
        continuous_missing[..., j] = False
    filled = torch.where(missing.unsqueeze(-2), draws, x.unsqueeze(-2))
    k = continuous_missing.sum(-1, keepdim=True).to(x.dtype)  # (..., n, 1)
    square = (normal**2 * continuous_missing.unsqueeze(-2)).sum(-1)  # (..., n, K)
    components = [
        math.log(0.5) - 0.5 * square * (scale / s) ** 2 - k * math.log(s) for s in SCALES
    ]
    gaussian = torch.logsumexp(torch.stack(components), 0)
    gaussian = gaussian - factors["log_det"][pattern].unsqueeze(-1) - 0.5 * k * math.log(2 * math.pi)
    return filled, log_q + torch.where(k > 0, gaussian, torch.zeros_like(gaussian))


def importance_reduce(log_prob, log_q):
    """``log mean_k p_k / q_k`` per row: ``log_prob`` of shape (..., n * K) (the K draws of a row
    consecutive), ``log_q`` of shape (..., n, K); returns (..., n)."""
    log_weight = log_prob.reshape(log_q.shape) - log_q
    return torch.logsumexp(log_weight, dim=-1) - math.log(log_q.shape[-1])
