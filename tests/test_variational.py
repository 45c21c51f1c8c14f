"""VariationalDensity: reverse-KL fits to targets with known normalizers, and bad targets."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from skflow.estimators.variational import VariationalDensity

# ---------------------------------------------------------------- targets
MEAN = torch.tensor([1.0, -1.0, 0.5])
_L = torch.tensor([[2.0, 0.0, 0.0], [0.4, 0.3, 0.0], [-0.6, 0.2, 0.7]])
COV = _L @ _L.T  # correlations of about 0.8 and -0.6
COV_INV = torch.linalg.inv(COV)
GAUSSIAN_LOG_Z = 0.5 * float(torch.logdet(2 * math.pi * COV))


def correlated_gaussian(x):
    """``N(MEAN, COV)`` without its normalizer, so ``log Z = 0.5 log det(2 pi COV)``."""
    r = x - MEAN
    return -0.5 * ((r @ COV_INV) * r).sum(dim=1)


def banana(x):
    """A curved, skewed 2-D density with no closed-form normalizer."""
    x1, x2 = x[:, 0], x[:, 1]
    return -0.5 * (x1 / 1.5) ** 2 - 0.5 * ((x2 - 0.5 * x1**2 + 1.0) / 0.6) ** 2 - 0.05 * x2**4


def _banana_log_z():
    """``log integral exp(banana)`` by the trapezoid rule on a fine grid (float64)."""
    t1 = torch.linspace(-9, 9, 1801, dtype=torch.float64)
    t2 = torch.linspace(-6, 8, 1401, dtype=torch.float64)
    g1, g2 = torch.meshgrid(t1, t2, indexing="ij")
    density = torch.exp(banana(torch.stack([g1.ravel(), g2.ravel()], dim=1))).reshape(g1.shape)
    return math.log(float(torch.trapezoid(torch.trapezoid(density, t2, dim=1), t1)))


def _whitened_moment_errors(samples, mean, cov):
    """Mean error in standard deviations, and max |C_w - I| of the whitened covariance."""
    chol_inv = np.linalg.inv(np.linalg.cholesky(cov))
    white = (samples - mean) @ chol_inv.T
    return np.abs(white.mean(axis=0)).max(), np.abs(np.cov(white.T) - np.eye(len(mean))).max()


GAUSSIAN_FLOWS = {
    "iaf": {"n_transforms": 3, "hidden_features": (32, 32)},
    "realnvp": {"n_transforms": 4, "hidden_features": (32, 32)},
    "planar": {"n_transforms": 8},
    "maf": {"n_transforms": 2, "hidden_features": (32,)},
}


@pytest.fixture(scope="module", params=list(GAUSSIAN_FLOWS))
def gaussian_fit(request):
    kwargs = GAUSSIAN_FLOWS[request.param]
    vd = VariationalDensity(
        correlated_gaussian,
        3,
        flow=request.param,
        max_steps=400,
        lr=1e-2,
        patience=100,
        random_state=0,
        **kwargs,
    )
    return vd.fit()


def test_log_normalizer_of_correlated_gaussian(gaussian_fit):
    log_z, ess = gaussian_fit.estimate_log_normalizer(20000, random_state=0, return_ess=True)
    assert abs(log_z - GAUSSIAN_LOG_Z) < 0.02
    assert 0.5 < ess <= 1.0
    assert gaussian_fit.estimate_log_normalizer(20000, random_state=0) == log_z
    # The ELBO bounds log Z from below (up to Monte Carlo error) and is close to it.
    assert GAUSSIAN_LOG_Z - 0.1 < gaussian_fit.elbo_ < GAUSSIAN_LOG_Z + 0.01


def test_sample_moments_of_correlated_gaussian(gaussian_fit):
    samples = gaussian_fit.sample(20000, random_state=1)
    assert samples.shape == (20000, 3) and samples.dtype == np.float64
    mean_error, cov_error = _whitened_moment_errors(samples, MEAN.numpy(), COV.numpy())
    assert mean_error < 0.1
    assert cov_error < 0.15


def test_elbo_history_improves(gaussian_fit):
    history = gaussian_fit.elbo_history_
    assert len(history) == gaussian_fit.n_iter_ > 100
    assert np.mean(history[-50:]) > np.mean(history[:20]) + 0.5


@pytest.mark.parametrize("flow", ["iaf", "realnvp"])
def test_log_normalizer_of_2d_density_integrated_numerically(flow):
    vd = VariationalDensity(
        banana,
        2,
        flow=flow,
        n_transforms=4,
        hidden_features=(32, 32),
        max_steps=1000,
        lr=1e-2,
        patience=100,
        random_state=0,
    ).fit()
    truth = _banana_log_z()
    assert abs(vd.estimate_log_normalizer(20000, random_state=0) - truth) < 0.03
    assert truth - 0.2 < vd.elbo_ < truth + 0.01
    # Sample moments against moments from the same quadrature grid.
    t1 = torch.linspace(-9, 9, 721, dtype=torch.float64)
    t2 = torch.linspace(-6, 8, 561, dtype=torch.float64)
    grid = torch.stack([g.ravel() for g in torch.meshgrid(t1, t2, indexing="ij")], dim=1)
    weights = torch.exp(banana(grid))
    weights = (weights / weights.sum()).numpy()
    grid = grid.numpy()
    mean = weights @ grid
    cov = (grid - mean).T @ ((grid - mean) * weights[:, None])
    mean_error, cov_error = _whitened_moment_errors(vd.sample(20000, random_state=1), mean, cov)
    assert mean_error < 0.1
    assert cov_error < 0.2


def test_radial_flow_fits_radially_symmetric_target():
    """``exp(-sqrt(1 + |x - c|^2))`` in 2-D has ``Z = 4 pi / e``."""
    center = torch.tensor([1.0, -2.0])

    def target(x):
        return -torch.sqrt(1.0 + ((x - center) ** 2).sum(dim=1))

    vd = VariationalDensity(
        target, 2, flow="radial", n_transforms=6, max_steps=400, lr=1e-2, patience=100, random_state=0
    ).fit()
    truth = math.log(4 * math.pi / math.e)
    assert abs(vd.estimate_log_normalizer(20000, random_state=0) - truth) < 0.03
    assert np.abs(vd.sample(20000, random_state=1).mean(axis=0) - center.numpy()).max() < 0.1


# ---------------------------------------------------------- score_samples
def test_score_samples_is_a_normalized_density_matching_sampling():
    vd = VariationalDensity(
        banana, 2, flow="iaf", n_transforms=2, hidden_features=(16,), max_steps=100, lr=1e-2, random_state=0
    ).fit()
    # The density the flow assigns to its own samples (one pass) equals score_samples (D passes).
    with torch.no_grad():
        x, log_q = vd.flow_.rsample_and_log_prob(200, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(vd.score_samples(x.double().numpy()), log_q.double().numpy(), atol=2e-4)
    # And it integrates to one.
    t1, t2 = np.linspace(-10, 10, 401), np.linspace(-10, 10, 401)
    g1, g2 = np.meshgrid(t1, t2, indexing="ij")
    density = np.exp(vd.score_samples(np.column_stack([g1.ravel(), g2.ravel()]))).reshape(g1.shape)
    assert abs(np.trapezoid(np.trapezoid(density, t2, axis=1), t1) - 1) < 0.01
    assert vd.score(x.double().numpy()) == pytest.approx(float(log_q.mean()), abs=2e-4)


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_score_samples_unavailable_for_planar_and_radial(flow):
    vd = VariationalDensity(banana, 2, flow=flow, n_transforms=2, max_steps=5, random_state=0).fit()
    with pytest.raises(NotImplementedError, match="cannot evaluate its density"):
        vd.score_samples(np.zeros((3, 2)))
    assert vd.sample(4).shape == (4, 2)
    assert np.isfinite(vd.estimate_log_normalizer(100, random_state=0))


def test_score_samples_checks_n_features():
    vd = VariationalDensity(banana, 2, flow="realnvp", n_transforms=2, max_steps=5, random_state=0).fit()
    with pytest.raises(ValueError, match="features"):
        vd.score_samples(np.zeros((3, 3)))


# ------------------------------------------------------------ bad targets
def _nan_target(x):
    return torch.where(x[:, 0] > 0, torch.nan, -0.5 * (x**2).sum(dim=1))


def _inf_target(x):
    return torch.where(x[:, 0] > 0.5, torch.inf, -0.5 * (x**2).sum(dim=1))


def _column_target(x):
    return -0.5 * (x**2).sum(dim=1, keepdim=True)


def _numpy_target(x):
    return -0.5 * (x.detach().numpy() ** 2).sum(axis=1)


def _detached_target(x):
    return -0.5 * (x.detach() ** 2).sum(dim=1)


@pytest.mark.parametrize(
    "target, error, match",
    [
        (_nan_target, ValueError, "NaN or infinite"),
        (_inf_target, ValueError, "NaN or infinite"),
        (_column_target, ValueError, "shape"),
        (_numpy_target, TypeError, "torch.Tensor"),
        (_detached_target, ValueError, "differentiabl"),
        ("not callable", ValueError, "log_prob"),
    ],
)
def test_bad_target_raises_clear_error(target, error, match):
    with pytest.raises(error, match=match):
        VariationalDensity(target, 2, flow="planar", n_transforms=2, max_steps=5, random_state=0).fit()


# ---------------------------------------------------------- sklearn glue
def _standard_normal(x):
    return -0.5 * (x**2).sum(dim=1)


def test_reproducible_clone_and_pickle():
    kwargs = {"flow": "iaf", "n_transforms": 2, "hidden_features": (8,), "max_steps": 30, "random_state": 3}
    a = VariationalDensity(_standard_normal, 2, **kwargs).fit()
    b = clone(a).fit()
    np.testing.assert_array_equal(a.sample(5, random_state=0), b.sample(5, random_state=0))
    assert a.elbo_ == b.elbo_
    restored = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(restored.sample(5, random_state=0), a.sample(5, random_state=0))
    assert restored.estimate_log_normalizer(500, random_state=1) == a.estimate_log_normalizer(
        500, random_state=1
    )


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError, match="flow"):
        VariationalDensity(_standard_normal, 2, flow="spline").fit()
    with pytest.raises(ValueError, match="hidden_features"):
        VariationalDensity(_standard_normal, 2, hidden_features=(), max_steps=2).fit()


def test_device_is_resolved_at_fit():
    kwargs = {
        "flow": "realnvp",
        "n_transforms": 1,
        "hidden_features": (4,),
        "max_steps": 3,
        "random_state": 0,
    }
    cpu = VariationalDensity(_standard_normal, 2, device=torch.device("cpu"), **kwargs).fit()
    assert next(cpu.flow_.parameters()).device == torch.device("cpu")
    by_name = VariationalDensity(_standard_normal, 2, device="cpu", **kwargs).fit()
    np.testing.assert_array_equal(cpu.sample(4, random_state=0), by_name.sample(4, random_state=0))
    if torch.cuda.device_count() <= 3:
        with pytest.raises(ValueError, match="not available"):
            VariationalDensity(_standard_normal, 2, device="cuda:3", **kwargs).fit()
