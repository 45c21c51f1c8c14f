"""Rational-quadratic spline: inverse, log-derivative against autograd, identity at zero, tails, shapes."""

import math

import pytest
import torch

from skflow.transforms.splines import RationalQuadraticSpline

BOUND = 3.0


def _params(spline, shape, seed=0, scale=2.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n, *rest = shape
    return scale * torch.randn(n, spline.n_params, *rest, generator=gen, dtype=dtype)


def _inputs(n=64, D=5, seed=1, dtype=torch.float64):
    """Points spread over and beyond [-BOUND, BOUND], with some exactly at the bound and at 0."""
    gen = torch.Generator().manual_seed(seed)
    x = 1.5 * BOUND * (2 * torch.rand(n, D, generator=gen, dtype=dtype) - 1)
    x[0] = BOUND
    x[1] = -BOUND
    x[2] = 0.0
    x[3, ::2] = BOUND
    x[3, 1::2] = -BOUND
    return x


def test_n_params():
    for K in (1, 2, 8, 13):
        assert RationalQuadraticSpline(n_bins=K).n_params == 3 * K - 1


@pytest.mark.parametrize("n_bins", [1, 2, 8])
def test_round_trip_float64(n_bins):
    spline = RationalQuadraticSpline(n_bins=n_bins, bound=BOUND)
    x = _inputs()
    params = _params(spline, x.shape)
    z, _ = spline(x, params)
    x_back, _ = spline.inverse(z, params)
    torch.testing.assert_close(x_back, x, atol=1e-8, rtol=0)
    # And the other way round, from arbitrary outputs.
    x2, _ = spline.inverse(x, params)
    z2, _ = spline(x2, params)
    torch.testing.assert_close(z2, x, atol=1e-8, rtol=0)


def test_boundary_points_fixed():
    spline = RationalQuadraticSpline(n_bins=6, bound=BOUND)
    x = torch.tensor([[-BOUND, BOUND]], dtype=torch.float64).repeat(4, 1)
    params = _params(spline, x.shape)
    z, ladj = spline(x, params)
    torch.testing.assert_close(z, x, atol=1e-12, rtol=0)
    assert torch.isfinite(ladj).all()
    x_back, ladj_inv = spline.inverse(z, params)
    torch.testing.assert_close(x_back, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-10, rtol=0)


def _autograd_ladj(fn, x):
    x = x.clone().requires_grad_(True)
    y, ladj = fn(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    return ladj.detach(), torch.log(grad.abs())


def test_forward_ladj_matches_autograd():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs()
    params = _params(spline, x.shape)
    ladj, expected = _autograd_ladj(lambda t: spline(t, params), x)
    torch.testing.assert_close(ladj, expected, atol=1e-8, rtol=1e-8)


def test_inverse_ladj_matches_autograd_and_forward():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    z = _inputs(seed=2)
    params = _params(spline, z.shape)
    ladj_inv, expected = _autograd_ladj(lambda t: spline.inverse(t, params), z)
    torch.testing.assert_close(ladj_inv, expected, atol=1e-8, rtol=1e-8)
    x, _ = spline.inverse(z, params)
    _, ladj_fwd = spline(x, params)
    torch.testing.assert_close(ladj_inv, -ladj_fwd, atol=1e-8, rtol=1e-8)


def test_derivative_continuous_at_bound():
    """The log-derivative just inside ±bound tends to the tails' 0 (boundary derivatives are 1)."""
    spline = RationalQuadraticSpline(n_bins=5, bound=BOUND)
    eps = 1e-10
    x = torch.tensor([[-BOUND - eps, -BOUND + eps, BOUND - eps, BOUND + eps]], dtype=torch.float64)
    params = _params(spline, (1, 1)).expand(-1, -1, 4)
    _, ladj = spline(x, params)
    torch.testing.assert_close(ladj, torch.zeros_like(ladj), atol=1e-6, rtol=0)


def _around_bound(dtype):
    """The six points ``-B - ulp, -B, -B + ulp, B - ulp, B, B + ulp`` in ``dtype``."""
    b = torch.tensor(BOUND, dtype=dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    return torch.stack(
        [torch.nextafter(-b, -inf), -b, torch.nextafter(-b, inf),
         torch.nextafter(b, -inf), b, torch.nextafter(b, inf)]
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_derivative_at_and_next_to_bound(direction, dtype):
    """At +-bound exactly and one ulp either side, for many parameter draws: autograd's derivative
    is positive and equals exp(ladj), ladj is finite, the bound maps to itself with ladj 0, and the
    round trip returns the input (exactly on the tails and the bound). Rounding used to put the
    inverse's relative position just past 1 at the bound, where a clamp zeroed the gradient."""
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    pts = _around_bound(dtype)
    t = pts.expand(512, -1).clone()
    # float32: moderate parameters, as elsewhere; its inverse is too ill-conditioned for extreme ones.
    scale = 2.0 if dtype == torch.float64 else 0.5
    params = _params(spline, t.shape, seed=7, scale=scale, dtype=dtype)
    fn, back = (spline, spline.inverse) if direction == "forward" else (spline.inverse, spline)
    tol = 1e-8 if dtype == torch.float64 else 1e-4

    out, ladj = fn(t, params)
    assert out.dtype == dtype and ladj.dtype == dtype
    assert torch.isfinite(ladj).all()
    _, log_grad = _autograd_ladj(lambda v: fn(v, params), t)
    assert torch.isfinite(log_grad).all()  # no zero (log -inf) or NaN derivative
    torch.testing.assert_close(ladj, log_grad, atol=tol, rtol=tol)

    # The bound itself (columns 1 and 4) and the tails (0 and 5) are exact.
    exact = [0, 1, 4, 5]
    assert torch.equal(out[:, exact], t[:, exact])
    assert torch.equal(ladj[:, exact], torch.zeros_like(ladj[:, exact]))
    t_back, ladj_back = back(out, params)
    assert torch.equal(t_back[:, exact], t[:, exact])
    # One ulp inside (columns 2 and 3): within a few ulps, scaled by the conditioning.
    _, ladj64 = fn(t.double(), params.double())
    eps = torch.finfo(dtype).eps
    allowed = 8 * eps * BOUND * (1 + torch.exp(ladj64.abs()))
    assert ((t_back.double() - t.double()).abs() <= allowed).all()
    torch.testing.assert_close(ladj_back, -ladj, atol=tol, rtol=tol)

    # Gradients with respect to the parameters stay finite there too.
    p = params.clone().requires_grad_(True)
    out, ladj = fn(t, p)
    (out.sum() + ladj.sum()).backward()
    assert torch.isfinite(p.grad).all()


def test_monotone_increasing():
    spline = RationalQuadraticSpline(n_bins=10, bound=BOUND)
    n = 2001
    x = torch.linspace(-1.5 * BOUND, 1.5 * BOUND, n, dtype=torch.float64).unsqueeze(1).repeat(1, 4)
    for seed in range(5):
        params = _params(spline, (1, 4), seed=seed, scale=3.0).expand(n, -1, -1)
        z, ladj = spline(x, params)
        assert (z.diff(dim=0) > 0).all()
        assert torch.isfinite(ladj).all()
        # Inverse is monotone too.
        xb, _ = spline.inverse(x, params)
        assert (xb.diff(dim=0) > 0).all()


def test_zero_params_identity():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs()
    params = torch.zeros(x.shape[0], spline.n_params, x.shape[1], dtype=torch.float64)
    z, ladj = spline(x, params)
    torch.testing.assert_close(z, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(x), atol=1e-12, rtol=0)
    x_back, ladj_inv = spline.inverse(x, params)
    torch.testing.assert_close(x_back, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj_inv, torch.zeros_like(x), atol=1e-12, rtol=0)


def test_zero_params_identity_float32():
    spline = RationalQuadraticSpline()
    x = 8 * torch.rand(100, 3) - 4
    params = torch.zeros(100, spline.n_params, 3)
    z, ladj = spline(x, params)
    torch.testing.assert_close(z, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros_like(x), atol=1e-5, rtol=0)


def test_identity_tails():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = torch.tensor(
        [[-1e6, -50.0, -BOUND - 1e-9, BOUND + 1e-9, 7.5, 1e6]], dtype=torch.float64
    ).repeat(8, 1)
    params = _params(spline, x.shape, scale=3.0)
    z, ladj = spline(x, params)
    assert torch.equal(z, x)
    assert torch.equal(ladj, torch.zeros_like(x))
    xb, ladj_inv = spline.inverse(x, params)
    assert torch.equal(xb, x)
    assert torch.equal(ladj_inv, torch.zeros_like(x))


def test_image_shaped_params():
    spline = RationalQuadraticSpline(n_bins=4, bound=BOUND)
    n, C, H, W = 3, 2, 4, 5
    gen = torch.Generator().manual_seed(3)
    x = 1.5 * BOUND * (2 * torch.rand(n, C, H, W, generator=gen, dtype=torch.float64) - 1)
    params = _params(spline, x.shape)
    assert params.shape == (n, spline.n_params, C, H, W)
    z, ladj = spline(x, params)
    assert z.shape == x.shape and ladj.shape == x.shape
    x_back, ladj_inv = spline.inverse(z, params)
    torch.testing.assert_close(x_back, x, atol=1e-8, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-8, rtol=1e-8)
    # Each element agrees with the same element computed on its own in flat (n, D) layout.
    flat_x = x.reshape(n, -1)
    flat_p = params.reshape(n, spline.n_params, -1)
    z_flat, ladj_flat = spline(flat_x, flat_p)
    torch.testing.assert_close(z_flat.reshape(x.shape), z)
    torch.testing.assert_close(ladj_flat.reshape(x.shape), ladj)
    # ladj against autograd in the image layout as well.
    ladj_fwd, expected = _autograd_ladj(lambda t: spline(t, params), x)
    torch.testing.assert_close(ladj_fwd, expected, atol=1e-8, rtol=1e-8)


def test_wrong_params_shape_raises():
    spline = RationalQuadraticSpline(n_bins=4)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        spline(x, torch.zeros(2, spline.n_params + 1, 3))
    with pytest.raises(ValueError):
        spline(x, torch.zeros(2, spline.n_params))


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError):
        RationalQuadraticSpline(n_bins=0)
    with pytest.raises(ValueError):
        RationalQuadraticSpline(bound=0.0)
    with pytest.raises(ValueError):
        RationalQuadraticSpline(n_bins=10, min_width=0.1)
    with pytest.raises(ValueError):
        RationalQuadraticSpline(n_bins=10, min_height=0.2)
    with pytest.raises(ValueError):
        RationalQuadraticSpline(min_derivative=1.0)


def test_gradients_reach_params():
    spline = RationalQuadraticSpline(n_bins=6, bound=BOUND)
    x = _inputs()
    inside = (x.abs() < BOUND).any(dim=1)
    x = x[inside]
    for scale in (0.0, 1.0):  # also at the identity (zero) initialisation
        params = _params(spline, x.shape, scale=scale).requires_grad_(True)
        z, ladj = spline(x, params)
        (z.square().sum() + ladj.sum()).backward()
        assert params.grad is not None
        assert torch.isfinite(params.grad).all()
        g = params.grad.abs().sum(dim=(0, 2))
        assert (g > 0).all(), g  # every parameter slot (widths, heights, derivatives) gets gradient
        params.grad = None
        x_back, ladj_inv = spline.inverse(z.detach(), params)
        (x_back.square().sum() + ladj_inv.sum()).backward()
        assert torch.isfinite(params.grad).all()
        assert (params.grad.abs().sum(dim=(0, 2)) > 0).all()


def test_gradients_finite_with_points_outside_and_on_bound():
    spline = RationalQuadraticSpline(n_bins=6, bound=BOUND)
    x = _inputs().requires_grad_(True)
    params = _params(spline, x.shape).requires_grad_(True)
    z, ladj = spline(x, params)
    xb, ladj_inv = spline.inverse(z, params)
    (z.sum() + ladj.sum() + xb.sum() + ladj_inv.sum()).backward()
    assert torch.isfinite(params.grad).all()
    assert torch.isfinite(x.grad).all()


def test_float32_round_trip():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs(n=256, dtype=torch.float32)
    # Moderate parameters, as a conditioner near its zero initialisation gives.
    params = _params(spline, x.shape, scale=0.5, dtype=torch.float32)
    z, ladj = spline(x, params)
    assert z.dtype == torch.float32 and ladj.dtype == torch.float32
    x_back, ladj_inv = spline.inverse(z, params)
    assert x_back.dtype == torch.float32 and ladj_inv.dtype == torch.float32
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_float32_round_trip_error_is_conditioning_limited(seed):
    """With extreme parameters the inverse is ill-conditioned (dx/dz up to ~1e6), so rounding z to
    float32 alone moves x by about eps * |z| * dx/dz. The round trip must stay within a small multiple
    of that, which needs the cancellation-free root on both signs of b."""
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs(n=512, seed=100 + seed, dtype=torch.float32)
    params = _params(spline, x.shape, seed=seed, scale=2.0, dtype=torch.float32)
    z, _ = spline(x, params)
    x_back, _ = spline.inverse(z, params)
    _, ladj64 = spline(x.double(), params.double())
    eps = torch.finfo(torch.float32).eps
    allowed = 32 * eps * BOUND * (1 + torch.exp(-ladj64))
    assert ((x_back.double() - x.double()).abs() <= allowed).all()


def test_inverse_accurate_at_steep_end_of_flat_bin():
    """A wide, flat bin whose right-hand knot derivative is large: near that knot b < 0 in the
    quadratic and 2c / (-b - sqrt(disc)) alone would cancel catastrophically (error ~100x worse)."""
    spline = RationalQuadraticSpline(n_bins=2, bound=1.0)
    n = 201
    params = torch.zeros(n, spline.n_params, 1, dtype=torch.float32)
    params[:, 0] = 3.0  # first bin wide ...
    params[:, 3] = 4.0  # ... and flat (the second bin takes nearly all the height)
    params[:, 4] = 6.0  # steep at the middle knot (derivative ~8.65)
    x_knot = 2.0 / (1.0 + math.exp(-3.0)) - 1.0  # middle knot, ~0.9033
    x = (torch.linspace(-0.2, 0.0, n, dtype=torch.float64) + x_knot).float().unsqueeze(1)
    z, _ = spline(x, params)
    x_back, _ = spline.inverse(z, params)
    _, ladj64 = spline(x.double(), params.double())
    eps = torch.finfo(torch.float32).eps
    allowed = 8 * eps * (1 + torch.exp(-ladj64))
    assert ((x_back.double() - x.double()).abs() <= allowed).all()


def test_float32_matches_float64():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs()
    params = _params(spline, x.shape)
    z64, ladj64 = spline(x, params)
    z32, ladj32 = spline(x.float(), params.float())
    torch.testing.assert_close(z32.double(), z64, atol=1e-4, rtol=0)
    torch.testing.assert_close(ladj32.double(), ladj64, atol=1e-3, rtol=1e-3)


def test_no_parameters_and_state():
    """The map holds no learnable state; everything comes from ``params``."""
    spline = RationalQuadraticSpline()
    assert list(spline.parameters()) == []
    assert "n_bins=8" in repr(spline)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_round_trip():
    spline = RationalQuadraticSpline(n_bins=8, bound=BOUND)
    x = _inputs().cuda()
    params = _params(spline, x.shape).cuda().requires_grad_(True)
    z, ladj = spline(x, params)
    assert z.device == x.device and ladj.device == x.device
    x_back, ladj_inv = spline.inverse(z, params)
    torch.testing.assert_close(x_back, x, atol=1e-8, rtol=0)
    torch.testing.assert_close(ladj_inv, -ladj, atol=1e-8, rtol=1e-8)
    ladj.sum().backward()
    assert torch.isfinite(params.grad).all()
