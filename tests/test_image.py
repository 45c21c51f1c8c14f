"""Tests of the image layers, the image input handling and the image estimators."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import clone
from sklearn.datasets import load_digits

from skflow._image import (
    DequantizedImageFlow,
    bits_per_dim,
    check_images,
    check_pixels,
    dequantization_noise,
    restore_layout,
    uniform_dequantized_score_samples,
)
from skflow.dequantization import UniformDequantization, VariationalDequantization
from skflow.distributions import StandardNormal
from skflow.flows import Flow
from skflow.image import GlowDensity, RealNVPImageDensity, _glow, _realnvp
from skflow.transforms import AffineCoupling, Compose
from skflow.transforms.image import (
    ConvResNet,
    Flatten,
    InvertibleConv1x1,
    Logit,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _perturb(module, scale=0.1, seed=0):
    """Move every parameter off its initial value so no layer is the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def _autograd_ladj(function, x):
    """log|det J| of ``function`` at one sample ``x`` (any shape), by autograd."""
    flat = x.reshape(-1)

    def f(v):
        return function(v.reshape(1, *x.shape))[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(f, flat)
    return torch.linalg.slogdet(jacobian)[1]


def _layers():
    torch.manual_seed(0)
    return {
        "logit": (Logit(0.05), (2, 4, 4), "unit"),
        "squeeze": (Squeeze(), (2, 4, 4), "real"),
        "conv1x1": (InvertibleConv1x1(4), (4, 2, 3), "real"),
        "checkerboard_coupling": (
            AffineCoupling(checkerboard_mask(4, 4, 1), ConvResNet(2, 4, 8, 1)),
            (2, 4, 4),
            "real",
        ),
        "channel_coupling": (AffineCoupling(channel_mask(4, 1), ConvResNet(4, 8, 8, 1)), (4, 2, 2), "real"),
        "multiscale": (
            MultiScale(Compose(Squeeze(), InvertibleConv1x1(8)), Flatten((4, 2, 2)), (8, 2, 2)),
            (2, 4, 4),
            "real",
        ),
        "realnvp": (_realnvp((1, 4, 4), 2, 8, 1), (1, 4, 4), "real"),
        "glow": (_glow((2, 4, 4), 2, 2, 8, 1), (2, 4, 4), "real"),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_inverse_and_log_det_match_autograd(name):
    layer, shape, domain = _layers()[name]
    layer = _perturb(layer.double()).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, *shape, generator=generator, dtype=torch.float64)
    if domain == "real":
        x = 2 * x - 1
    z, ladj = layer(x)
    x_back, ladj_inverse = layer.inverse(z)
    torch.testing.assert_close(x_back, x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj_inverse, -ladj, atol=1e-9, rtol=1e-9)
    for i in range(len(x)):
        expected = _autograd_ladj(lambda v: layer(v)[0], x[i])
        torch.testing.assert_close(ladj[i], expected, atol=1e-8, rtol=1e-8)
        expected_inverse = _autograd_ladj(lambda v: layer.inverse(v)[0], z[i])
        torch.testing.assert_close(ladj_inverse[i], expected_inverse, atol=1e-8, rtol=1e-8)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    z, _ = Squeeze()(x)
    assert z.shape == (1, 4, 2, 2)
    # channel k = 2*di + dj holds pixel (2i + di, 2j + dj)
    for di in range(2):
        for dj in range(2):
            torch.testing.assert_close(z[0, 2 * di + dj], x[0, 0, di::2, dj::2])


def test_invertible_conv_weight_is_lu_product_and_log_det_is_sum_log_s():
    conv = _perturb(InvertibleConv1x1(5).double())
    w = conv.weight()
    assert torch.allclose(torch.linalg.slogdet(w)[1], conv.log_s.sum())
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(conv(x)[0], torch.einsum("oc,nchw->nohw", w, x))


def test_masks_partition_pixels_and_channels():
    board = checkerboard_mask(4, 6, 0)
    assert board.shape == (1, 4, 6) and int(board.sum()) == 12
    assert not (board & checkerboard_mask(4, 6, 1)).any()
    assert channel_mask(6, 0).squeeze().tolist() == [True] * 3 + [False] * 3
    assert not (channel_mask(6, 0) & channel_mask(6, 1)).any()


def test_variational_dequantization_log_q_matches_autograd():
    torch.manual_seed(0)
    n_bins = 5
    deq = _perturb(VariationalDequantization(n_bins, (1, 4, 4), hidden_channels=4, n_couplings=2).double())
    x = torch.randint(0, n_bins, (2, 1, 4, 4)).double()
    v = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    y, log_q = deq(x, v)
    assert ((y * n_bins >= x) & (y * n_bins < x + 1)).all()
    for i in range(2):
        e = torch.special.ndtri(v[i])
        # q(y | x) = N(e) / |det dy/de|, with e -> y computed by autograd
        ladj = _autograd_ladj(lambda t, row=x[i : i + 1]: deq(row, torch.special.ndtr(t))[0], e)
        expected = norm.logpdf(e.numpy()).sum() - float(ladj)
        assert float(log_q[i].detach()) == pytest.approx(expected, abs=1e-8)


def test_check_images_layouts_round_trip():
    rng = np.random.default_rng(0)
    four = rng.random((5, 2, 3, 4))
    images, layout = check_images(four)
    assert images.shape == (5, 2, 3, 4) and layout.ndim == 4
    np.testing.assert_array_equal(restore_layout(images, layout), four)
    three = rng.random((5, 3, 4))
    images, layout = check_images(three)
    assert images.shape == (5, 1, 3, 4) and layout.image_shape == (1, 3, 4)
    np.testing.assert_array_equal(restore_layout(images, layout), three)
    flat = four.reshape(5, -1)
    images, layout = check_images(flat, image_shape=(2, 3, 4))
    np.testing.assert_array_equal(images, four)
    np.testing.assert_array_equal(restore_layout(images, layout), flat)
    with pytest.raises(ValueError, match="image_shape"):
        check_images(flat)
    with pytest.raises(ValueError, match="pixels"):
        check_images(flat, image_shape=(3, 3, 3))
    with pytest.raises(ValueError, match="image_shape"):
        check_images(four, image_shape=(1, 3, 4))


def test_check_pixels_rejects_out_of_range_and_fractions():
    check_pixels(np.array([[0, 16]]), 17)
    for bad in ([[0, 17]], [[-1, 0]], [[0.5, 1]]):
        with pytest.raises(ValueError, match="integers"):
            check_pixels(np.array(bad), 17)


def test_bits_per_dim_of_identity_flow_computed_by_hand():
    # Identity flow, standard normal base, no logit: log P(x) bound is
    # sum_d log N((x_d + u_d) / K - 1/2) - D log K for the noise u.
    n_bins, shape = 4, (1, 2, 2)
    module = DequantizedImageFlow(
        Flow(Flatten(shape), StandardNormal(4)),
        shape,
        n_bins,
        UniformDequantization(n_bins),
        logit_alpha=None,
    ).double()
    x = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 3.0, 0.0, 1.0]])
    u = np.array([[0.5, 0.25, 0.75, 0.1], [0.0, 0.9, 0.3, 0.6]])
    got = module.log_prob(torch.tensor(x), torch.tensor(u)).numpy()
    expected = norm.logpdf((x + u) / n_bins - 0.5).sum(axis=1) - 4 * math.log(n_bins)
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    class Fixed:
        def score_samples(self, X):
            return expected

    assert bits_per_dim(Fixed(), x.reshape(2, 2, 2)) == pytest.approx(-expected.mean() / (4 * math.log(2)))


def test_uniform_dequantized_score_of_uniform_density_is_exact():
    # p = K^-D on [0, K)^D gives P(x) = K^-D exactly: log2(K) bits/dim.
    n_bins, X = 17, load_digits().data[:10]
    score = uniform_dequantized_score_samples(lambda Y: np.full(len(Y), -64 * math.log(n_bins)), X, n_bins, 3)
    np.testing.assert_allclose(score, -64 * math.log(n_bins))

    class Wrapped:
        def score_samples(self, X):
            return score

    assert bits_per_dim(Wrapped(), X) == pytest.approx(math.log2(n_bins))


def test_dequantization_noise_depends_only_on_the_row():
    X = load_digits().data[:20]
    full = dequantization_noise(X, 2)
    part = dequantization_noise(X[[7, 3]], 2)
    np.testing.assert_array_equal(part, full[:, [7, 3]])
    assert full.shape == (2, 20, 64) and 0 <= full.min() and full.max() < 1


# ----------------------------------------------------------- estimators
def _digits(n=120):
    return load_digits().images[:n].astype(np.int64)


def _tiny(cls, **params):
    settings = {
        "hidden_channels": 4,
        "n_blocks": 1,
        "max_epochs": 2,
        "batch_size": 32,
        "random_state": 0,
        "device": "cpu",
    }
    if cls is GlowDensity:
        settings["n_steps"] = 1
    return cls(**{**settings, **params})


@pytest.mark.parametrize("cls", [RealNVPImageDensity, GlowDensity])
@pytest.mark.parametrize("layout", ["nchw", "nhw", "flat"])
def test_samples_come_back_as_integers_in_the_fit_layout(cls, layout):
    images = _digits()
    X = {"nchw": images[:, None], "nhw": images, "flat": images.reshape(len(images), -1)}[layout]
    est = _tiny(cls, n_bins=17, image_shape=(1, 8, 8) if layout == "flat" else None).fit(X)
    samples = est.sample(5, random_state=0)
    assert samples.shape == (5, *X.shape[1:])
    assert samples.dtype == np.int64 and samples.min() >= 0 and samples.max() <= 16
    np.testing.assert_array_equal(samples, est.sample(5, random_state=0))
    # every layout of the same images gets the same scores
    expected = est.score_samples(images[:7])
    for other in (images[:7, None], images[:7].reshape(7, -1)):
        np.testing.assert_allclose(est.score_samples(other), expected)
    assert est.image_shape_ == (1, 8, 8) and est.n_features_in_ == 64


def test_score_samples_bookkeeping_matches_manual_computation():
    n_bins, alpha = 17, 0.05
    X = _digits()
    est = _tiny(RealNVPImageDensity, n_bins=n_bins, logit_alpha=alpha, n_score_draws=3).fit(X)
    flat = X[:6].reshape(6, -1).astype(np.float64)
    transform = est.net_.module_.flow.transform.eval()
    draws = []
    for u in dequantization_noise(flat, 3):
        y = (flat + u) / n_bins
        p = alpha + (1 - 2 * alpha) * y
        s = np.log(p) - np.log1p(-p)
        ladj_logit = np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))), axis=1)
        with torch.no_grad():
            z, ladj = transform(torch.tensor(s.reshape(6, 1, 8, 8), dtype=torch.float32))
        base = norm.logpdf(z.double().numpy()).sum(axis=1)
        draws.append(base + ladj.double().numpy() + ladj_logit - 64 * math.log(n_bins))
    expected = logsumexp(np.stack(draws), axis=0) - math.log(3)
    np.testing.assert_allclose(est.score_samples(X[:6]), expected, rtol=1e-4)
    assert bits_per_dim(est, X[:6]) == pytest.approx(-expected.mean() / (64 * math.log(2)), rel=1e-4)


def test_scores_are_deterministic_and_independent_of_other_rows():
    X = _digits()
    est = _tiny(GlowDensity, n_bins=17).fit(X)
    full = est.score_samples(X[:20])
    np.testing.assert_array_equal(full, est.score_samples(X[:20]))
    np.testing.assert_allclose(est.score_samples(X[[13, 2]]), full[[13, 2]], rtol=1e-6)


def test_variational_dequantization_trains_and_bounds_the_probability():
    X = _digits(200)
    est = _tiny(GlowDensity, n_bins=17, dequantization="variational", max_epochs=3).fit(X)
    scores = est.score_samples(X[:10])
    assert np.all(np.isfinite(scores))
    # a bound on a probability of a discrete image: log P <= 0
    assert np.all(scores < 0)
    assert sum(p.numel() for p in est.net_.module_.dequantizer.parameters()) > 0


def test_continuous_images_get_float_samples_and_the_scaling_jacobian():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2, 4, 4))
    est = _tiny(GlowDensity, n_levels=1).fit(X)
    samples = est.sample(4, random_state=0)
    assert samples.shape == (4, 2, 4, 4) and samples.dtype == np.float64
    # scaling X by c changes log p by -D log c
    scaled = clone(est).fit(3.0 * X)
    np.testing.assert_allclose(
        scaled.score_samples(3.0 * X[:5]), est.score_samples(X[:5]) - 32 * math.log(3.0), rtol=1e-4
    )


def test_invalid_inputs_raise():
    X = _digits(40)
    with pytest.raises(ValueError, match="integers"):
        _tiny(GlowDensity, n_bins=10).fit(X)
    with pytest.raises(ValueError, match="image_shape"):
        _tiny(GlowDensity, n_bins=17).fit(X.reshape(40, -1))
    est = _tiny(GlowDensity, n_bins=17).fit(X)
    with pytest.raises(ValueError):
        est.score_samples(np.zeros((3, 4, 4), dtype=int))
    with pytest.raises(ValueError, match="even"):
        _tiny(GlowDensity).fit(np.zeros((10, 5, 5)) + np.arange(25.0).reshape(5, 5))


def test_pickle_and_pipeline_round_trip():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = _digits(120).reshape(120, -1)
    pipe = make_pipeline(FunctionTransformer(), _tiny(RealNVPImageDensity, n_bins=17, image_shape=(8, 8)))
    search = GridSearchCV(pipe, {"realnvpimagedensity__hidden_channels": [2, 4]}, cv=2).fit(X)
    assert np.isfinite(search.best_score_)
    est = search.best_estimator_
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.score_samples(X[:5]), est.score_samples(X[:5]))
