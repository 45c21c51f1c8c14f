"""Planar and radial layers: log-determinants against autograd, constraints, no forward."""

import math

import pytest
import torch

from skflow.estimators.variational import VariationalDensity
from skflow.models.distributions import StandardNormal
from skflow.models.flow import Flow
from skflow.transforms import Compose
from skflow.transforms.planar import Planar, Radial

LAYERS = {"planar": Planar, "radial": Radial}


def _perturbed(layer, seed=0, scale=1.0):
    """Random non-trivial raw parameters (fresh layers are the identity)."""
    gen = torch.Generator().manual_seed(seed)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def _autograd_logdet(fn, z):
    """``log|det d fn / dz|`` per row, from the full autograd Jacobian."""
    out = []
    for row in z:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("n_features", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_det_matches_autograd(name, n_features, seed):
    layer = _perturbed(LAYERS[name](n_features), seed)
    z = torch.randn(8, n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 10))
    x, ladj = layer.inverse(z)
    assert x.shape == z.shape and ladj.shape == (8,)
    torch.testing.assert_close(ladj, _autograd_logdet(layer.inverse, z), rtol=1e-9, atol=1e-9)


def test_stack_log_det_matches_autograd():
    torch.manual_seed(0)
    stack = Compose(*[_perturbed(LAYERS[n](3), seed=k) for k, n in enumerate(["planar", "radial"] * 3)])
    z = torch.randn(6, 3, dtype=torch.float64)
    _, ladj = stack.inverse(z)
    torch.testing.assert_close(ladj, _autograd_logdet(stack.inverse, z), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LAYERS)
def test_identity_at_init(name):
    torch.manual_seed(0)
    z = torch.randn(16, 4)
    x, ladj = LAYERS[name](4).inverse(z)
    torch.testing.assert_close(x, z, rtol=0, atol=1e-6)
    torch.testing.assert_close(ladj, torch.zeros(16), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", LAYERS)
def test_forward_raises_clear_error(name):
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        LAYERS[name](3)(torch.randn(2, 3))
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        LAYERS[name](3)(torch.randn(2, 3), torch.randn(2, 4))
    flow = Flow(Compose(LAYERS[name](3)), StandardNormal(3))
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        flow.log_prob(torch.randn(2, 3))


@pytest.mark.parametrize("name", LAYERS)
def test_context_is_ignored(name):
    layer = _perturbed(LAYERS[name](3))
    z = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        plain = layer.inverse(z)
        conditioned = layer.inverse(z, torch.randn(6, 2, dtype=torch.float64))
    for a, b in zip(plain, conditioned):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def _stack(n_features, seed=0):
    torch.manual_seed(seed)
    layers = [_perturbed(LAYERS[n](n_features), seed=k) for k, n in enumerate(["planar", "radial"] * 2)]
    return Flow(Compose(*layers), StandardNormal(n_features)).double()


def test_flow_rsample_log_prob_is_change_of_variables():
    flow = _stack(3)
    gen = torch.Generator().manual_seed(0)
    x, log_q = flow.rsample_and_log_prob(6, generator=gen)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = (
        -0.5 * (z**2).sum(1) - 1.5 * math.log(2 * math.pi) - _autograd_logdet(flow.transform.inverse, z)
    )
    assert x.shape == (6, 3) and log_q.shape == (6,)
    torch.testing.assert_close(x, flow.transform.inverse(z)[0])
    torch.testing.assert_close(log_q, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(flow.sample(6, generator=torch.Generator().manual_seed(0)), x)
    (log_q.sum() + x.square().sum()).backward()  # reparameterised: gradients reach every layer
    for pname, p in flow.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), pname


@pytest.mark.parametrize("seed", [0, 1])
def test_1d_flow_density_integrates_to_one(seed):
    """In 1-D the map is monotone; integrate q(x) over x = T(z) on a z grid."""
    flow = _stack(1, seed)
    z = torch.linspace(-9, 9, 20001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        x, ladj = flow.transform.inverse(z)
        log_q = flow.base.log_prob(z) - ladj
    x = x[:, 0]
    assert torch.all(torch.diff(x) > 0)
    assert abs(torch.trapezoid(torch.exp(log_q), x).item() - 1) < 1e-6


@torch.no_grad()
def _planar_constraint(layer):
    return float(layer.w.dot(layer.u_hat()))


def test_planar_constraint_for_adversarial_parameters():
    """u pointing against w (w^T u << -1) is repaired by u_hat; the map stays injective."""
    layer = Planar(2).double()
    with torch.no_grad():
        layer.w.copy_(torch.tensor([3.0, 0.0]))
        layer.u.copy_(torch.tensor([-10.0, 1.0]))
        layer.b.zero_()
    assert float(layer.w.detach().dot(layer.u.detach())) < -1
    assert _planar_constraint(layer) > -1
    # Along w the map is strictly increasing, so it is injective.
    t = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    z = torch.stack([t, torch.zeros_like(t)], dim=1)
    x, ladj = layer.inverse(z)
    assert torch.all(torch.diff(x[:, 0]) > 0)
    assert torch.isfinite(ladj).all()


def test_radial_constraint_for_adversarial_parameters():
    layer = Radial(2).double()
    with torch.no_grad():
        layer.a.fill_(2.0)
        layer.c.fill_(-30.0)  # beta -> -alpha from above
        layer.z0.zero_()
    alpha, beta = layer.alpha_beta()
    assert alpha > 0 and beta >= -alpha
    # The radius is mapped by a strictly increasing function: r -> r (1 + beta / (alpha + r)).
    r = torch.linspace(1e-3, 5, 1000, dtype=torch.float64)
    x, ladj = layer.inverse(torch.stack([r, torch.zeros_like(r)], dim=1))
    assert torch.all(torch.diff(x[:, 0]) > 0)
    assert torch.isfinite(ladj).all()


def _wide_target(x):
    """An anisotropic, shifted Gaussian that pulls the layers far from the identity."""
    scaled = (x - torch.tensor([2.0, -1.0])) / torch.tensor([3.0, 0.3])
    return -0.5 * (scaled**2).sum(dim=1) - 0.3 * torch.sin(3 * x[:, 0])


@pytest.mark.parametrize("name", LAYERS)
def test_constraints_hold_after_training(name):
    vd = VariationalDensity(
        _wide_target, 2, flow=name, n_transforms=6, max_steps=250, lr=3e-2, patience=50, random_state=0
    ).fit()
    layers = [m for m in vd.flow_.modules() if isinstance(m, LAYERS[name])]
    assert len(layers) == 6
    moved = 0.0
    for layer in layers:
        if name == "planar":
            assert _planar_constraint(layer) > -1
            moved += float(layer.u_hat().detach().norm())
        else:
            alpha, beta = layer.alpha_beta()
            assert alpha > 0 and beta > -alpha
            moved += abs(float(beta.detach()))
    assert moved > 1e-2  # training did change the layers
    # Every determinant along the flow's own samples is positive and finite.
    z = torch.randn(512, 2)
    _, ladj = vd.flow_.transform.inverse(z)
    assert torch.isfinite(ladj).all()
