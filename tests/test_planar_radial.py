"""Planar and radial layers: log-determinants against autograd, constraints, no forward."""

import pytest
import torch

from skflow.transforms import Compose
from skflow.transforms.planar import Planar, Radial
from skflow.variational import VariationalDensity

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
