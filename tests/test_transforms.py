"""Every transform: inverse, log-determinant against autograd (float64), masks, identity at init."""

import math

import pytest
import torch

from skflow import MADEDensity, MAFDensity, RealNVPDensity
from skflow.distributions import DiagonalNormal, GaussianMixture, MADEMixture, StandardNormal
from skflow.transforms import (
    MADE,
    MLP,
    ActNorm,
    AffineCoupling,
    BatchNorm,
    Compose,
    Inverse,
    MaskedAffineAutoregressive,
    alternating_masks,
)

D = 5


def _perturbed(module, seed=0, scale=0.5):
    """Give every parameter a random non-trivial value (zero-init layers start as identity)."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _batchnorm():
    bn = BatchNorm(D)
    bn.running_mean.copy_(torch.linspace(-1, 1, D))
    bn.running_var.copy_(torch.linspace(0.5, 2, D))
    return bn


def _actnorm():
    an = ActNorm(D)
    an.train()
    an(torch.randn(64, D) * 3 + 1)  # data-dependent initialisation
    return an


TRANSFORMS = {
    "maf": lambda: MaskedAffineAutoregressive(D, (16, 16)),
    "maf_reversed": lambda: MaskedAffineAutoregressive(D, (16,), torch.arange(D).flip(0)),
    "maf_random_order": lambda: MaskedAffineAutoregressive(D, (16, 16), torch.randperm(D)),
    "iaf": lambda: Inverse(MaskedAffineAutoregressive(D, (16, 16))),
    "coupling": lambda: AffineCoupling(alternating_masks(D, 2)[1], MLP(D, 2 * D, (16,))),
    "batchnorm": _batchnorm,
    "actnorm": _actnorm,
    "composed": lambda: Compose(
        MaskedAffineAutoregressive(D, (8,)),
        _batchnorm(),
        AffineCoupling(alternating_masks(D, 2)[0], MLP(D, 2 * D, (8,))),
    ),
}


def _autograd_ladj(fn, x):
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(fn, xi))[1] for xi in x])


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_inverse_and_log_det_match_autograd(name):
    torch.manual_seed(0)
    transform = _perturbed(TRANSFORMS[name]()).eval()
    x = torch.randn(7, D, dtype=torch.float64)

    z, ladj = transform(x)
    x_back, ladj_inverse = transform.inverse(z)
    assert z.shape == x.shape and ladj.shape == (7,)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_inverse, -ladj, rtol=1e-9, atol=1e-9)

    forward = lambda xi: transform(xi[None])[0][0]  # noqa: E731
    torch.testing.assert_close(ladj, _autograd_ladj(forward, x), rtol=1e-8, atol=1e-8)
    inverse = lambda zi: transform.inverse(zi[None])[0][0]  # noqa: E731
    torch.testing.assert_close(ladj_inverse, _autograd_ladj(inverse, z), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    transform = _perturbed(TRANSFORMS[name]()).train()
    x = torch.randn(16, D, dtype=torch.float64)
    z, ladj = transform(x)
    (z.square().sum() - ladj.sum()).backward()
    for pname, p in transform.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), pname


@pytest.mark.parametrize("order", [torch.arange(D), torch.arange(D).flip(0), torch.tensor([2, 0, 4, 1, 3])])
def test_made_is_autoregressive(order):
    made = _perturbed(MADE(D, 3, (32, 32), order))
    x = torch.randn(D, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], x)  # (3, D, D)
    for i in range(D):
        for j in range(D):
            if order[j] >= order[i]:
                assert torch.all(jac[:, i, j] == 0), (i, j)
    # and it does use the allowed inputs
    allowed = order[None, :] < order[:, None]
    assert torch.all(jac.abs().sum(0)[allowed] > 0)


def test_maf_layer_jacobian_is_triangular():
    layer = _perturbed(MaskedAffineAutoregressive(D, (16,)))
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], torch.randn(D, dtype=torch.float64))
    assert torch.all(torch.triu(jac, diagonal=1) == 0)


def test_batchnorm_uses_batch_statistics_in_training():
    bn = BatchNorm(D).double().train()
    x = torch.randn(512, D, dtype=torch.float64) * 3 + 2
    z, ladj = bn(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(D, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(D, dtype=torch.float64), atol=1e-4, rtol=0)
    expected = -0.5 * torch.log(x.var(0, unbiased=False) + bn.eps).sum()
    torch.testing.assert_close(ladj, expected.expand(512))
    assert torch.all(bn.running_mean != 0)


def test_actnorm_data_dependent_init():
    an = ActNorm(D).double().train()
    x = torch.randn(256, D, dtype=torch.float64) * 4 - 1
    z, _ = an(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(D, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(D, dtype=torch.float64), atol=1e-5, rtol=0)
    loc_before = an.loc.clone()
    an(x + 10)  # initialised once only
    torch.testing.assert_close(an.loc, loc_before)


@pytest.mark.parametrize(
    "estimator",
    [
        MADEDensity(),
        MADEDensity(n_components=3, order="random"),
        MAFDensity(n_transforms=3),
        MAFDensity(n_transforms=3, batch_norm=True),
        RealNVPDensity(n_transforms=4, batch_norm=True),
    ],
    ids=["made", "made_mog", "maf", "maf_bn", "realnvp_bn"],
)
def test_untrained_flow_is_its_base_density(estimator):
    torch.manual_seed(0)
    flow = estimator._build_flow(D).eval()
    x = torch.randn(20, D)
    z, ladj = flow.transform(x)
    # exact identity, up to batch norm's eps in eval mode
    torch.testing.assert_close(z, x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ladj, torch.zeros(20), rtol=0, atol=1e-3)
    if isinstance(flow.base, StandardNormal) and type(flow.base) is StandardNormal:
        expected = -0.5 * (x**2).sum(1) - 0.5 * D * math.log(2 * math.pi)
        torch.testing.assert_close(flow.log_prob(x), expected, rtol=0, atol=1e-3)


def _integrate_2d(log_prob, lim=9.0, n=301):
    grid = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    density = torch.exp(log_prob(torch.stack([xx.ravel(), yy.ravel()], 1))).reshape(n, n)
    return torch.trapezoid(torch.trapezoid(density, grid), grid).item()


@pytest.mark.parametrize(
    "base",
    [
        lambda: StandardNormal(2),
        lambda: DiagonalNormal(2),
        lambda: GaussianMixture(2, 3),
        lambda: MADEMixture(2, 3, (16,)),
    ],
    ids=["normal", "diagonal", "mixture", "made_mixture"],
)
def test_base_distributions_normalise_and_sample(base):
    torch.manual_seed(0)
    dist = base().double()
    with torch.no_grad():
        for p in dist.parameters():
            p.add_(0.3 * torch.randn_like(p))
        assert abs(_integrate_2d(dist.log_prob) - 1) < 1e-3
        samples = dist.sample(20000, torch.Generator().manual_seed(1))
        # the sample mean matches the density's mean computed by quadrature
        grid = torch.linspace(-9, 9, 301, dtype=torch.float64)
        xx, yy = torch.meshgrid(grid, grid, indexing="ij")
        pts = torch.stack([xx.ravel(), yy.ravel()], 1)
        w = torch.exp(dist.log_prob(pts)) * (grid[1] - grid[0]) ** 2
        mean = (w[:, None] * pts).sum(0)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.05, rtol=0)


def test_flow_sample_and_log_prob_agree():
    torch.manual_seed(0)
    flow = MAFDensity(n_transforms=2, hidden_features=(8,))._build_flow(2)
    flow = _perturbed(flow, scale=0.15).eval()
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob(50, torch.Generator().manual_seed(0))
        torch.testing.assert_close(log_q, flow.log_prob(x), rtol=1e-9, atol=1e-9)
        assert abs(_integrate_2d(flow.log_prob, lim=15, n=601) - 1) < 2e-3
