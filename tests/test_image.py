"""Tests of the image layers, the image input handling and the image estimators."""

import math
import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import clone
from sklearn.datasets import load_digits

from skflow import (
    GlowDensity,
    IAFDensity,
    MADEDensity,
    MAFDensity,
    NSFDensity,
    RealNVPDensity,
    RealNVPImageDensity,
    TarFlowDensity,
)
from skflow.data import (
    check_images,
    check_levels,
    restore_layout,
    scoring_noise,
    uniform_dequantized_score_samples,
)
from skflow.estimators.image import _glow, _realnvp, pixel_transform
from skflow.metrics import bits_per_dim
from skflow.models.dequantization import UniformDequantization, VariationalDequantization
from skflow.models.distributions import StandardNormal
from skflow.models.flow import DequantizedFlow, Flow
from skflow.transforms import ActNorm, AffineCoupling, Compose, Inverse, LULinear
from skflow.transforms.multiscale import (
    ConvResNet,
    FixedAffine,
    Flatten,
    Logit,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)


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


def _one_hot(labels, n_classes):
    """One-hot rows (float64); a label of -1 gives the all-zero (null) context."""
    context = torch.zeros(len(labels), n_classes, dtype=torch.float64)
    for i, label in enumerate(labels):
        if label >= 0:
            context[i, label] = 1.0
    return context


def _layers():
    """name -> (layer, input shape, domain, context features)."""
    torch.manual_seed(0)
    return {
        "logit": (Logit(0.05), (2, 4, 4), "unit", 0),
        "fixed_affine": (FixedAffine(2.0, -1.0), (2, 4, 4), "unit", 0),
        "squeeze": (Squeeze(), (2, 4, 4), "real", 0),
        "conv1x1": (LULinear(4, dim=1, init="rotation"), (4, 2, 3), "real", 0),
        "actnorm": (ActNorm(4), (4, 2, 3), "real", 0),
        "checkerboard_coupling": (
            AffineCoupling(checkerboard_mask(4, 4, 1), ConvResNet(2, 4, 8, 1)),
            (2, 4, 4),
            "real",
            0,
        ),
        "channel_coupling": (
            AffineCoupling(channel_mask(4, 1), ConvResNet(4, 8, 8, 1)),
            (4, 2, 2),
            "real",
            0,
        ),
        "conditional_coupling": (
            AffineCoupling(checkerboard_mask(4, 4, 0), ConvResNet(2 + 3, 4, 8, 1)),
            (2, 4, 4),
            "real",
            3,
        ),
        "multiscale": (
            MultiScale(
                Compose(Squeeze(), LULinear(8, dim=1, init="rotation")), Flatten((4, 2, 2)), (8, 2, 2)
            ),
            (2, 4, 4),
            "real",
            0,
        ),
        "realnvp": (_realnvp((1, 4, 4), 2, 8, 1), (1, 4, 4), "real", 0),
        "glow": (_glow((2, 4, 4), 2, 2, 8, 1), (2, 4, 4), "real", 0),
        "realnvp_conditional": (_realnvp((1, 4, 4), 2, 8, 1, context_features=3), (1, 4, 4), "real", 3),
        "glow_conditional": (_glow((2, 4, 4), 2, 2, 8, 1, context_features=3), (2, 4, 4), "real", 3),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_inverse_and_log_det_match_autograd(name):
    layer, shape, domain, context_features = _layers()[name]
    layer = _perturb(layer.double()).eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, *shape, generator=generator, dtype=torch.float64)
    if domain == "real":
        x = 2 * x - 1
    context = _one_hot([0, 2, -1], context_features) if context_features else None
    z, ladj = layer(x, context)
    x_back, ladj_inverse = layer.inverse(z, context)
    torch.testing.assert_close(x_back, x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj_inverse, -ladj, atol=1e-9, rtol=1e-9)
    for i in range(len(x)):
        c = None if context is None else context[i : i + 1]
        expected = _autograd_ladj(lambda v, c=c: layer(v, c)[0], x[i])
        torch.testing.assert_close(ladj[i], expected, atol=1e-8, rtol=1e-8)
        expected_inverse = _autograd_ladj(lambda v, c=c: layer.inverse(v, c)[0], z[i])
        torch.testing.assert_close(ladj_inverse[i], expected_inverse, atol=1e-8, rtol=1e-8)
    if context_features:  # the class changes the map; no context is the null class
        other = _one_hot([1, 1, 1], context_features)
        assert not torch.allclose(layer(x, other)[0], z)
        torch.testing.assert_close(layer(x, torch.zeros_like(context))[0][2], z[2])


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    z, _ = Squeeze()(x)
    assert z.shape == (1, 4, 2, 2)
    # channel k = 2*di + dj holds pixel (2i + di, 2j + dj)
    for di in range(2):
        for dj in range(2):
            torch.testing.assert_close(z[0, 2 * di + dj], x[0, 0, di::2, dj::2])


def test_invertible_conv_weight_is_lu_product_and_log_det_is_sum_log_s():
    torch.manual_seed(0)
    conv = LULinear(5, dim=1, init="rotation").double()
    w0 = conv.weight()
    torch.testing.assert_close(w0 @ w0.T, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)  # a rotation
    conv = _perturb(conv)
    w = conv.weight()
    torch.testing.assert_close(torch.linalg.slogdet(w)[1], conv.log_s.sum())
    x = torch.randn(2, 5, 3, 3, dtype=torch.float64)
    z, ladj = conv(x)
    torch.testing.assert_close(z, torch.einsum("oc,nchw->nohw", w, x))
    torch.testing.assert_close(ladj, (9 * conv.log_s.sum()).expand(2))  # one 1x1 conv per pixel


def test_masks_partition_pixels_and_channels():
    board = checkerboard_mask(4, 6, 0)
    assert board.shape == (1, 4, 6) and int(board.sum()) == 12
    assert not (board & checkerboard_mask(4, 6, 1)).any()
    assert channel_mask(6, 0).squeeze().tolist() == [True] * 3 + [False] * 3
    assert not (channel_mask(6, 0) & channel_mask(6, 1)).any()


def test_pixel_transform_choices():
    assert pixel_transform(None, 0.05) is None
    logit = pixel_transform(17, 0.05)
    assert isinstance(logit, Logit) and logit.alpha == 0.05
    affine = pixel_transform(17, None)
    assert isinstance(affine, FixedAffine) and (affine.scale, affine.shift) == (2.0, -1.0)


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
    # flat rows in, flat rows out, same values
    y_flat, log_q_flat = deq(x.reshape(2, -1), v.reshape(2, -1))
    assert y_flat.shape == (2, 16)
    torch.testing.assert_close(y_flat, y.reshape(2, -1))
    torch.testing.assert_close(log_q_flat, log_q)


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


def test_check_levels_rejects_out_of_range_and_fractions():
    check_levels(np.array([[0, 16]]), 17)
    for bad in ([[0, 17]], [[-1, 0]], [[0.5, 1]]):
        with pytest.raises(ValueError, match="integers"):
            check_levels(np.array(bad), 17)


def test_bits_per_dim_of_identity_flow_computed_by_hand():
    # Identity flow after 2 y - 1, standard normal base: the bound on log P(x) is
    # sum_d log N(2 (x_d + u_d) / K - 1) + D log 2 - D log K for the noise u.
    n_bins = 4
    module = DequantizedFlow(
        Flow(pixel_transform(n_bins, None), StandardNormal(4)), UniformDequantization(n_bins)
    ).double()
    x = np.array([[0.0, 1.0, 2.0, 3.0], [3.0, 3.0, 0.0, 1.0]])
    u = np.array([[0.5, 0.25, 0.75, 0.1], [0.0, 0.9, 0.3, 0.6]])
    got = module.log_prob(torch.tensor(x), noise=torch.tensor(u)).numpy()
    expected = norm.logpdf(2 * (x + u) / n_bins - 1).sum(axis=1) + 4 * math.log(2) - 4 * math.log(n_bins)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        module.log_prob(torch.tensor(x))
    # quantize maps each cell back to its integer, and samples are integers in range
    np.testing.assert_array_equal(module.quantize(torch.tensor((x + u) / n_bins)).numpy(), x)
    samples = module.sample(50, generator=torch.Generator().manual_seed(0)).numpy()
    assert samples.shape == (50, 4) and np.all(samples == np.round(samples))
    assert samples.min() >= 0 and samples.max() <= n_bins - 1

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
    with pytest.raises(ValueError, match="integers"):
        uniform_dequantized_score_samples(lambda Y: np.zeros(len(Y)), X + 0.5, n_bins)


def test_scoring_noise_depends_only_on_the_row():
    X = load_digits().data[:20]
    full = scoring_noise(X, 2)
    part = scoring_noise(X[[7, 3]], 2)
    np.testing.assert_array_equal(part, full[:, [7, 3]])
    assert full.shape == (2, 20, 64) and 0 <= full.min() and full.max() < 1
    assert not np.array_equal(scoring_noise(X, 2, seed=1), full)
    np.testing.assert_array_equal(scoring_noise(X, 2, seed=1), scoring_noise(X, 2, seed=1))


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
    module = est.net_.module_.eval()
    assert isinstance(module, DequantizedFlow) and isinstance(module.dequantizer, UniformDequantization)
    logit, unflatten, realnvp = module.flow.transform.transforms
    assert isinstance(logit, Logit) and isinstance(unflatten, Inverse)
    flat = X[:6].reshape(6, -1).astype(np.float64)
    draws = []
    for u in scoring_noise(flat, 3):
        y = (flat + u) / n_bins
        p = alpha + (1 - 2 * alpha) * y
        s = np.log(p) - np.log1p(-p)
        ladj_logit = np.sum(np.log((1 - 2 * alpha) / (p * (1 - p))), axis=1)
        with torch.no_grad():
            z, ladj = realnvp(torch.tensor(s.reshape(6, 1, 8, 8), dtype=torch.float32))
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


def test_fits_are_deterministic_with_random_state():
    X = _digits()
    first = _tiny(GlowDensity, n_bins=17).fit(X)
    second = _tiny(GlowDensity, n_bins=17).fit(X)
    np.testing.assert_array_equal(first.score_samples(X[:5]), second.score_samples(X[:5]))
    np.testing.assert_array_equal(first.sample(4, random_state=3), second.sample(4, random_state=3))
    other = _tiny(GlowDensity, n_bins=17, random_state=1).fit(X)
    assert not np.array_equal(other.score_samples(X[:5]), first.score_samples(X[:5]))


def test_variational_dequantization_trains_and_bounds_the_probability():
    X = _digits(200)
    est = _tiny(GlowDensity, n_bins=17, dequantization="variational", max_epochs=3).fit(X)
    scores = est.score_samples(X[:10])
    assert np.all(np.isfinite(scores))
    # a bound on a probability of a discrete image: log P <= 0
    assert np.all(scores < 0)
    dequantizer = est.net_.module_.dequantizer
    assert isinstance(dequantizer, VariationalDequantization)
    assert sum(p.numel() for p in dequantizer.parameters()) > 0


def test_continuous_images_get_float_samples_and_the_scaling_jacobian():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2, 4, 4))
    est = _tiny(GlowDensity, n_levels=1).fit(X)
    assert not isinstance(est.net_.module_, DequantizedFlow)
    samples = est.sample(4, random_state=0)
    assert samples.shape == (4, 2, 4, 4) and samples.dtype == np.float64
    # scaling X by c changes log p by -D log c
    scaled = clone(est).fit(3.0 * X)
    np.testing.assert_allclose(
        scaled.score_samples(3.0 * X[:5]), est.score_samples(X[:5]) - 32 * math.log(3.0), rtol=1e-4
    )


@pytest.mark.parametrize("cls", [RealNVPImageDensity, GlowDensity])
def test_class_conditional_image_density_is_a_generative_classifier(cls):
    digits = load_digits()
    keep = digits.target < 3
    X, y = digits.images[keep][:90].astype(np.int64), digits.target[keep][:90]
    names = np.array(["zero", "one", "two"])
    est = _tiny(cls, n_bins=17).fit(X, names[y])
    np.testing.assert_array_equal(est.classes_, ["one", "two", "zero"])
    np.testing.assert_allclose(est.class_prior_, np.bincount(y, minlength=3)[[1, 2, 0]] / len(y))
    proba = est.predict_proba(X[:10])
    assert proba.shape == (10, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    predicted = est.predict(X[:10])
    assert set(predicted) <= set(est.classes_)
    np.testing.assert_array_equal(predicted, est.classes_[proba.argmax(axis=1)])
    # the marginal is log sum_c pi_c P(x | c), each term the module's bound under the class's one-hot context
    module = est.net_.module_.eval()
    flat = torch.as_tensor(X[:10].reshape(10, -1), dtype=torch.float32)
    per_class = []
    for c in range(3):
        context = torch.zeros(10, 3)
        context[:, c] = 1.0
        with torch.no_grad():
            draws = [
                module(flat, context, torch.as_tensor(u, dtype=torch.float32)).double().numpy()
                for u in scoring_noise(X[:10].reshape(10, -1), est.n_score_draws)
            ]
        per_class.append(logsumexp(draws, axis=0) - math.log(len(draws)))
    per_class = np.stack(per_class, axis=1)
    assert np.ptp(per_class, axis=1).min() > 0  # the class context reaches the couplings
    joint = per_class + np.log(est.class_prior_)
    np.testing.assert_allclose(est.score_samples(X[:10]), logsumexp(joint, axis=1), rtol=1e-5)
    np.testing.assert_allclose(proba, np.exp(joint - logsumexp(joint, axis=1, keepdims=True)), rtol=1e-4)
    samples = est.sample(4, y="two", random_state=0)
    assert samples.shape == (4, 8, 8) and samples.dtype == np.int64
    assert samples.min() >= 0 and samples.max() <= 16
    assert est.sample(3, y=["zero", "one", "two"], random_state=0).shape == (3, 8, 8)
    np.testing.assert_array_equal(
        est.sample(3, y="one", random_state=0), est.sample(3, y="one", random_state=0)
    )
    with pytest.raises(ValueError, match="not seen"):
        est.sample(2, y="three")


_ESTIMATORS = [
    (MADEDensity, {"hidden_features": (8,)}, "rows"),
    (MAFDensity, {"hidden_features": (8,), "n_transforms": 1}, "rows"),
    (IAFDensity, {"hidden_features": (8,), "n_transforms": 1}, "rows"),
    (NSFDensity, {"hidden_features": (8,), "n_transforms": 1}, "rows"),
    (RealNVPDensity, {"hidden_features": (8,), "n_transforms": 1}, "rows"),
    (RealNVPImageDensity, {"hidden_channels": 4, "n_blocks": 1}, "images"),
    (GlowDensity, {"hidden_channels": 4, "n_steps": 1}, "images"),
    (TarFlowDensity, {"n_blocks": 1, "n_layers": 1, "channels": 8, "n_heads": 2}, "rows"),
]


def _data(kind, n=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)) if kind == "rows" else rng.normal(size=(n, 4, 4))


@pytest.mark.parametrize("cls, params, kind", _ESTIMATORS, ids=[e[0].__name__ for e in _ESTIMATORS])
def test_continuous_y_is_refused(cls, params, kind):
    X = _data(kind)
    est = cls(max_epochs=1, random_state=0, **params)
    with pytest.raises(ValueError, match="class labels"):
        est.fit(X, np.linspace(0.0, 1.0, len(X)))
    assert not hasattr(est, "net_")


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
@pytest.mark.parametrize("cls, params, kind", _ESTIMATORS, ids=[e[0].__name__ for e in _ESTIMATORS])
def test_absent_device_is_an_error_at_fit(cls, params, kind):
    est = cls(max_epochs=1, random_state=0, device="cuda:7", **params)  # construction validates nothing
    with pytest.raises(ValueError, match="cuda:7"):
        est.fit(_data(kind))
    assert not hasattr(est, "net_")


def test_invalid_inputs_raise():
    X = _digits(40)
    with pytest.raises(ValueError, match="integers"):
        _tiny(GlowDensity, n_bins=10).fit(X)
    with pytest.raises(ValueError, match="image_shape"):
        _tiny(GlowDensity, n_bins=17).fit(X.reshape(40, -1))
    est = _tiny(GlowDensity, n_bins=17).fit(X)
    with pytest.raises(ValueError):
        est.score_samples(np.zeros((3, 4, 4), dtype=int))
    with pytest.raises(ValueError, match="integers"):
        est.score_samples(X[:3] + 0.5)
    with pytest.raises(ValueError, match="without class labels"):
        est.sample(2, y=1)
    assert not hasattr(est, "predict_proba")
    with pytest.raises(ValueError, match="even"):
        _tiny(GlowDensity).fit(np.zeros((10, 5, 5)) + np.arange(25.0).reshape(5, 5))


def test_pickle_and_pipeline_round_trip():
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = _digits(120).reshape(120, -1)
    pipe = make_pipeline(FunctionTransformer(), _tiny(RealNVPImageDensity, n_bins=17, image_shape=(8, 8)))
    search = GridSearchCV(pipe, {"realnvpimagedensity__hidden_channels": [2, 4]}, cv=2).fit(X)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # every candidate fitted and scored
    est = search.best_estimator_
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.score_samples(X[:5]), est.score_samples(X[:5]))
    np.testing.assert_array_equal(restored[-1].sample(3, random_state=0), est[-1].sample(3, random_state=0))
