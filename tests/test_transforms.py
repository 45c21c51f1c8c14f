"""Every transform and dequantizer against references, in float64.

One registry (name -> :class:`Case`) holds every transform of
:mod:`skflow.transforms` (and the multi-scale image transforms of
:mod:`skflow.estimators.image`), with and without context where it takes one. Each
entry goes through the same checks with non-trivial (perturbed) parameters:

- ``inverse(forward(x)) == x`` and the inverse's log-determinant is minus the
  forward one at matching points;
- both log-determinants equal ``slogdet`` of the autograd Jacobian per sample
  (inputs and outputs flattened), and samples are processed independently;
- a conditional entry's output depends on the context and the inverse with
  the same context still round-trips;
- gradients of a loss on the output and log-determinant reach every parameter;
- ``state_dict`` restores the exact map in a fresh instance built under
  another seed;
- a fresh (unperturbed) layer is the identity (or a pure rearrangement)
  where that is the design.

Then the dequantizers, the base distributions (reference formulas and
quadrature in 1-D and 2-D) and the ``Flow`` / ``DequantizedFlow`` modules.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.nn import functional as F

from skflow import IAFDensity, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from skflow.estimators.image import _glow, _realnvp
from skflow.models.dequantization import UniformDequantization, VariationalDequantization
from skflow.models.distributions import DiagonalNormal, GaussianMixture, MADEMixture, StandardNormal
from skflow.models.flow import DequantizedFlow, Flow
from skflow.transforms import (
    MADE,
    MLP,
    ActNorm,
    AffineCoupling,
    BatchNorm,
    Compose,
    Coupling,
    Inverse,
    LULinear,
    MaskedAffineAutoregressive,
    MaskedAutoregressive,
    alternating_masks,
)
from skflow.transforms.multiscale import (
    ConvResNet,
    FixedAffine,
    Flatten,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from skflow.transforms.splines import RationalQuadraticSpline
from skflow.transforms.tarflow_blocks import Patchify, TarFlowBlock, guided, tarflow

F64 = torch.float64
D = 5  # features of tabular entries
K = 3  # context features
N = 4  # samples per check
IMAGE = (2, 4, 4)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Case:
    """One registry entry.

    make : builds a fresh transform (float32, under a seeded global RNG).
    shape : one sample's input shape.
    context : context width (0: the entry takes no context).
    one_hot : the context is one-hot class labels.
    fresh : what a fresh layer is by design: "identity", "permutation"
        (a rearrangement of the input, zero log-determinant) or None.
    unit : inputs lie in (0, 1).
    warmup : one training-mode pass on data before the checks (act-norm's
        data-dependent init, batch-norm's running statistics).
    """

    make: Callable[[], torch.nn.Module]
    shape: tuple
    context: int = 0
    one_hot: bool = False
    fresh: str | None = None
    unit: bool = False
    warmup: bool = False


def _batchnorm(n_features):
    bn = BatchNorm(n_features)
    bn.running_mean.copy_(torch.linspace(-1, 1, n_features))
    bn.running_var.copy_(torch.linspace(0.5, 2, n_features))
    return bn


def _spline():
    return RationalQuadraticSpline(n_bins=5, bound=2.0)


def _image_coupling(mask, context):
    c = IMAGE[0]
    return AffineCoupling(mask, ConvResNet(c + context, 2 * c, hidden_channels=8, n_blocks=1))


def _tarflow_block(context, reverse):
    return TarFlowBlock(3, 2, channels=8, n_layers=1, n_heads=2, context_features=context, reverse=reverse)


def _tarflow(context, mixing=True):
    return tarflow(
        8,
        (2, 2, 2),
        patch_size=1,
        channels=8,
        n_blocks=2,
        n_layers=1,
        n_heads=2,
        context_features=context,
        mixing=mixing,
    )


def _compose(context):
    mask = alternating_masks(D, 2)[0]
    return Compose(
        MaskedAffineAutoregressive(D, (8,), context_features=context),
        _batchnorm(D),
        AffineCoupling(mask, MLP(D + context, 2 * D, (8,))),
        LULinear(D, bias=True),
        ActNorm(D),
        MaskedAutoregressive(D, (8,), torch.arange(D).flip(0), _spline(), context),
    )


REGISTRY = {}
for k in (0, K):
    tag = "_context" if k else ""
    REGISTRY.update(
        {
            f"maf{tag}": Case(
                lambda k=k: MaskedAffineAutoregressive(D, (16, 16), context_features=k),
                (D,),
                k,
                fresh="identity",
            ),
            f"maf_reversed{tag}": Case(
                lambda k=k: MaskedAffineAutoregressive(D, (16,), torch.arange(D).flip(0), context_features=k),
                (D,),
                k,
                fresh="identity",
            ),
            f"maf_random_order{tag}": Case(
                lambda k=k: MaskedAffineAutoregressive(D, (16, 16), torch.randperm(D), context_features=k),
                (D,),
                k,
                fresh="identity",
            ),
            f"made_spline{tag}": Case(
                lambda k=k: MaskedAutoregressive(D, (16,), None, _spline(), k), (D,), k, fresh="identity"
            ),
            f"iaf{tag}": Case(
                lambda k=k: Inverse(MaskedAffineAutoregressive(D, (16,), context_features=k)),
                (D,),
                k,
                fresh="identity",
            ),
            f"affine_coupling{tag}": Case(
                lambda k=k: AffineCoupling(alternating_masks(D, 2)[1], MLP(D + k, 2 * D, (16,))),
                (D,),
                k,
                fresh="identity",
            ),
            f"spline_coupling{tag}": Case(
                lambda k=k: Coupling(alternating_masks(D, 2)[0], MLP(D + k, 14 * D, (16,)), _spline()),
                (D,),
                k,
                fresh="identity",
            ),
            f"image_coupling_checkerboard{tag}": Case(
                lambda k=k: _image_coupling(checkerboard_mask(4, 4, 1), k), IMAGE, k, fresh="identity"
            ),
            f"image_coupling_channels{tag}": Case(
                lambda k=k: _image_coupling(channel_mask(2, 0), k), IMAGE, k, fresh="identity"
            ),
            f"realnvp_multiscale{tag}": Case(
                lambda k=k: _realnvp((1, 4, 4), 2, 8, 1, k), (1, 4, 4), k, fresh="permutation", warmup=True
            ),
            f"glow_multiscale{tag}": Case(
                lambda k=k: _glow((1, 4, 4), 2, 1, 8, 1, k), (1, 4, 4), k, warmup=True
            ),
            f"tarflow_block{tag}": Case(
                lambda k=k: _tarflow_block(k, False), (3, 2), k, one_hot=True, fresh="identity"
            ),
            f"tarflow_block_reverse{tag}": Case(
                lambda k=k: _tarflow_block(k, True), (3, 2), k, one_hot=True, fresh="identity"
            ),
            f"tarflow{tag}": Case(lambda k=k: _tarflow(k), (8,), k, one_hot=True, fresh="permutation"),
            f"compose{tag}": Case(lambda k=k: _compose(k), (D,), k, warmup=True),
        }
    )
REGISTRY.update(
    {
        "tarflow_tabular_no_mixing": Case(
            lambda: tarflow(6, None, 2, channels=8, n_blocks=3, n_layers=1, n_heads=2),
            (6,),
            fresh="permutation",
        ),
        "batchnorm_rows": Case(lambda: _batchnorm(D), (D,)),
        "batchnorm_images": Case(lambda: _batchnorm(2), IMAGE),
        "actnorm_rows": Case(lambda: ActNorm(D), (D,), warmup=True),
        "actnorm_images": Case(lambda: ActNorm(2), IMAGE, warmup=True),
        "lulinear_rows": Case(lambda: LULinear(D), (D,), fresh="identity"),
        "lulinear_images_rotation": Case(lambda: LULinear(2 * 2, dim=1, init="rotation"), (4, 2, 3)),
        "lulinear_tokens_bias": Case(lambda: LULinear(4, dim=-1, bias=True), (3, 4), fresh="identity"),
        "logit": Case(lambda: Logit(0.05), IMAGE, unit=True),
        "fixed_affine": Case(lambda: FixedAffine(2.0, -1.0), IMAGE),
        "fixed_affine_negative": Case(lambda: FixedAffine(-0.5, 0.3), (D,)),
        "squeeze": Case(Squeeze, IMAGE, fresh="permutation"),
        "flatten": Case(lambda: Flatten(IMAGE), IMAGE, fresh="permutation"),
        "patchify_image": Case(lambda: Patchify(32, IMAGE, 2), (32,), fresh="permutation"),
        "patchify_tabular": Case(lambda: Patchify(6, None, 3), (6,), fresh="permutation"),
        "compose_images": Case(
            lambda: Compose(
                Logit(0.05),
                ActNorm(2),
                LULinear(2, init="rotation"),
                _image_coupling(checkerboard_mask(4, 4, 0), 0),
                Squeeze(),
                Flatten((8, 2, 2)),
            ),
            IMAGE,
            unit=True,
            warmup=True,
        ),
    }
)
NAMES = sorted(REGISTRY)
CONDITIONAL = [name for name in NAMES if REGISTRY[name].context]


def _perturb(module, seed, scale=0.5):
    """Add noise to every parameter, scaled by fan-in (zero-initialised layers start as the identity)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.add_(scale / math.sqrt(fan_in) * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def _inputs(case, n, seed):
    gen = torch.Generator().manual_seed(seed)
    if case.unit:
        return 0.02 + 0.96 * torch.rand(n, *case.shape, generator=gen, dtype=F64)
    return torch.randn(n, *case.shape, generator=gen, dtype=F64)


def _contexts(case, n, seed):
    if not case.context:
        return None
    gen = torch.Generator().manual_seed(seed)
    if case.one_hot:
        return F.one_hot(torch.randint(case.context, (n,), generator=gen), case.context).to(F64)
    return torch.randn(n, case.context, generator=gen, dtype=F64)


def _other_context(case, context):
    if case.one_hot:
        return context.roll(1, dims=1)  # every sample gets another class
    return context + 1.0 + torch.randn(context.shape, generator=torch.Generator().manual_seed(7), dtype=F64)


def _fresh(name, seed=0):
    torch.manual_seed(seed)
    return REGISTRY[name].make().double()


def _build(name, seed=0):
    """The entry's transform, float64, perturbed, warmed up if needed, in eval mode."""
    case = REGISTRY[name]
    module = _perturb(_fresh(name, seed), seed)
    if case.warmup:
        module.train()
        with torch.no_grad():
            x = 1.5 * _inputs(case, 64, 99) + 0.5 if not case.unit else _inputs(case, 64, 99)
            module(x, _contexts(case, 64, 98))
    return module.eval()


def _batch_jacobian(fn, x):
    """Per-sample Jacobians ``(n, d_out, d_in)`` of a map that treats samples independently."""
    x = x.detach().requires_grad_(True)
    out = fn(x).reshape(len(x), -1)
    rows = [
        torch.autograd.grad(out[:, j].sum(), x, retain_graph=True)[0].reshape(len(x), -1)
        for j in range(out.shape[1])
    ]
    return torch.stack(rows, dim=1)


def _slogdet(jac):
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert torch.all(sign != 0)
    return logabsdet


# --------------------------------------------------------------------------- omnibus suite


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name):
    case = REGISTRY[name]
    transform = _build(name)
    x, context = _inputs(case, N, 0), _contexts(case, N, 1)
    with torch.no_grad():
        z, ladj = transform(x, context)
        x_back, ladj_inverse = transform.inverse(z, context)
    assert ladj.shape == (N,) and ladj.dtype == F64 and z.dtype == F64
    assert z[0].numel() == x[0].numel()
    assert torch.all(torch.isfinite(z)) and torch.all(torch.isfinite(ladj))
    assert not torch.allclose(ladj, torch.zeros_like(ladj)) or REGISTRY[name].fresh == "permutation"
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ladj_inverse, -ladj, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_autograd(name):
    case = REGISTRY[name]
    transform = _build(name)
    x, context = _inputs(case, N, 0), _contexts(case, N, 1)
    with torch.no_grad():
        z, ladj = transform(x, context)
        _, ladj_inverse = transform.inverse(z, context)
        # samples are processed independently (which the batched Jacobian relies on)
        for i in range(N):
            zi, ladj_i = transform(x[i : i + 1], None if context is None else context[i : i + 1])
            torch.testing.assert_close(zi[0], z[i], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(ladj_i[0], ladj[i], rtol=1e-10, atol=1e-10)
    jac = _batch_jacobian(lambda v: transform(v, context)[0], x)
    torch.testing.assert_close(ladj, _slogdet(jac), rtol=1e-8, atol=1e-8)
    jac_inverse = _batch_jacobian(lambda v: transform.inverse(v, context)[0], z)
    torch.testing.assert_close(ladj_inverse, _slogdet(jac_inverse), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_context_conditions_the_map(name):
    case = REGISTRY[name]
    transform = _build(name)
    x, context = _inputs(case, N, 0), _contexts(case, N, 1)
    other = _other_context(case, context)
    with torch.no_grad():
        z, ladj = transform(x, context)
        z_other, ladj_other = transform(x, other)
        assert (z - z_other).abs().amax() > 1e-4
        for c, zc, ladj_c in [(context, z, ladj), (other, z_other, ladj_other)]:
            x_back, ladj_back = transform.inverse(zc, c)
            torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(ladj_back, -ladj_c, rtol=1e-9, atol=1e-9)
        # inverting with the wrong context does not give x back
        assert (transform.inverse(z, other)[0] - x).abs().amax() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    case = REGISTRY[name]
    transform = _build(name)
    x, context = _inputs(case, 16, 0).requires_grad_(True), _contexts(case, 16, 1)
    z, ladj = transform(x, context)
    (0.5 * z.square().sum() - ladj.sum()).backward()
    assert torch.all(torch.isfinite(x.grad)) and torch.any(x.grad != 0)
    for pname, p in transform.named_parameters():
        assert p.requires_grad
        assert p.grad is not None and torch.any(p.grad != 0), pname


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_restores_the_map(name):
    case = REGISTRY[name]
    transform = _build(name, seed=0)
    copy = _fresh(name, seed=1)  # another seed: the state must carry orders, permutations, signs
    copy.load_state_dict(transform.state_dict())
    copy.eval()
    x, context = _inputs(case, N, 0), _contexts(case, N, 1)
    with torch.no_grad():
        z, ladj = transform(x, context)
        z_copy, ladj_copy = copy(x, context)
        x_back, ladj_back = copy.inverse(z, context)
        expected_back = transform.inverse(z, context)
    for got, expected in [
        (z_copy, z),
        (ladj_copy, ladj),
        (x_back, expected_back[0]),
        (ladj_back, expected_back[1]),
    ]:
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].fresh])
def test_fresh_layer_is_identity_or_rearrangement(name):
    case = REGISTRY[name]
    transform = _fresh(name).eval()
    x, context = _inputs(case, N, 0), _contexts(case, N, 1)
    with torch.no_grad():
        z, ladj = transform(x, context)
        x_back, ladj_inverse = transform.inverse(z, context)
    torch.testing.assert_close(ladj, torch.zeros(N, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj_inverse, torch.zeros(N, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-12)
    if case.fresh == "identity":
        torch.testing.assert_close(z, x, rtol=0, atol=1e-12)
    else:
        flat_x, flat_z = x.reshape(N, -1), z.reshape(N, -1)
        torch.testing.assert_close(flat_z.sort(dim=1).values, flat_x.sort(dim=1).values, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- layer-specific references


@pytest.mark.parametrize("context", [0, K])
@pytest.mark.parametrize("order", [torch.arange(D), torch.arange(D).flip(0), torch.tensor([2, 0, 4, 1, 3])])
def test_made_is_autoregressive(order, context):
    torch.manual_seed(0)
    made = _perturb(MADE(D, 3, (32, 32), order, context).double(), 0)
    x = torch.randn(D, dtype=F64)
    c = torch.randn(context, dtype=F64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None], c[None] if context else None)[0], x)
    allowed = order[None, :] < order[:, None]  # output i may see input j
    assert torch.all(jac[:, ~allowed] == 0)
    assert torch.all(jac.abs().sum(0)[allowed] > 0)
    if context:  # every output sees the context
        jac_c = torch.autograd.functional.jacobian(lambda v: made(x[None], v[None])[0], c)
        assert torch.all(jac_c.abs().sum(-1) > 0)


@pytest.mark.parametrize("n_features", [1, 2])
def test_first_feature_in_the_order_is_conditioned(n_features):
    """Even the first feature's parameters (and a single feature's) depend on the context."""
    torch.manual_seed(0)
    made = _perturb(MADE(n_features, 2, (8, 8), context_features=K).double(), 0)
    x = torch.randn(1, n_features, dtype=F64)
    c = torch.randn(K, dtype=F64)
    jac_c = torch.autograd.functional.jacobian(lambda v: made(x, v[None])[0], c)  # (2, D, K)
    assert torch.all(jac_c.abs().sum(-1) > 0)
    dist = _perturb(MADEMixture(n_features, 3, (8,), context_features=K).double(), 0)
    z = torch.randn(4, n_features, dtype=F64)
    with torch.no_grad():
        assert (dist.log_prob(z, c.expand(4, K)) - dist.log_prob(z, -c.expand(4, K))).abs().amin() > 1e-6


def test_maf_layer_jacobian_is_triangular_in_its_order():
    order = torch.tensor([3, 1, 4, 0, 2])
    torch.manual_seed(0)
    layer = _perturb(MaskedAffineAutoregressive(D, (16,), order).double(), 0)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], torch.randn(D, dtype=F64))
    perm = torch.argsort(order)
    permuted = jac[perm][:, perm]
    assert torch.all(torch.triu(permuted, diagonal=1) == 0)
    assert torch.all(torch.tril(permuted, diagonal=-1).abs().sum() > 0)


def test_batchnorm_uses_batch_statistics_in_training():
    bn = BatchNorm(D).double().train()
    x = torch.randn(512, D, dtype=F64) * 3 + 2
    z, ladj = bn(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(D, dtype=F64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(D, dtype=F64), atol=1e-4, rtol=0)
    expected = -0.5 * torch.log(x.var(0, unbiased=False) + bn.eps).sum()
    torch.testing.assert_close(ladj, expected.expand(512))
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(0))


def test_actnorm_data_dependent_init_survives_state_dict():
    an = ActNorm(2).double().train()
    x = torch.randn(256, 2, 3, 3, dtype=F64) * 4 - 1
    z, _ = an(x)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(2, dtype=F64), atol=1e-10, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(2, dtype=F64), atol=1e-5, rtol=0)
    loc = an.loc.detach().clone()
    an(x + 10)  # initialised once only
    torch.testing.assert_close(an.loc.detach(), loc)
    copy = ActNorm(2).double().train()
    copy(x - 5)  # a layer that already initialised itself, then loads a state
    copy.load_state_dict(an.state_dict())
    torch.testing.assert_close(copy(x + 3)[0], an(x + 3)[0], rtol=0, atol=0)  # no second init
    fresh = ActNorm(2).double().train()
    fresh.load_state_dict(an.state_dict())
    torch.testing.assert_close(fresh(x + 3)[0], an(x + 3)[0], rtol=0, atol=0)
    # loading an uninitialised state into an initialised layer: the next training pass initialises it
    an.load_state_dict(ActNorm(2).double().state_dict())
    z, _ = an(x + 3)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(2, dtype=F64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("dim, shape", [(1, (5,)), (1, (5, 2, 3)), (-1, (3, 5))])
def test_lulinear_matches_explicit_matrix(dim, shape):
    torch.manual_seed(0)
    layer = _perturb(LULinear(5, dim=dim, init="rotation", bias=True).double(), 0)
    x = torch.randn(4, *shape, dtype=F64)
    w = layer.weight()
    expected = torch.einsum("ij,nj...->ni...", w, x) if dim == 1 else x @ w.T
    expected = (
        expected + layer.bias.reshape(-1, *([1] * (len(shape) - 1))) if dim == 1 else expected + layer.bias
    )
    z, ladj = layer(x)
    torch.testing.assert_close(z, expected)
    positions = x[0].numel() // 5
    torch.testing.assert_close(ladj, (torch.linalg.slogdet(w)[1] * positions).expand(4))


def test_lulinear_rotation_init_is_orthogonal():
    torch.manual_seed(0)
    layer = LULinear(6, init="rotation").double()
    w = layer.weight()
    torch.testing.assert_close(w @ w.T, torch.eye(6, dtype=F64), atol=1e-6, rtol=0)
    assert abs(float(layer.log_s.detach().sum())) < 1e-5
    assert not torch.allclose(w, torch.eye(6, dtype=F64))


def test_image_rearrangements_match_torch_references():
    x = torch.randn(3, 2, 4, 6, dtype=F64)
    z, _ = Squeeze()(x)
    torch.testing.assert_close(z, F.pixel_unshuffle(x, 2), rtol=0, atol=0)
    tokens, _ = Patchify(48, (2, 4, 6), 2)(x.reshape(3, -1))
    torch.testing.assert_close(tokens, F.unfold(x, 2, stride=2).transpose(1, 2), rtol=0, atol=0)
    y = torch.rand(3, 2, 4, 6, dtype=F64)
    z, _ = Logit(0.1)(y)
    torch.testing.assert_close(z, torch.logit(0.1 + 0.8 * y))
    with pytest.raises(ValueError, match="patch_size"):
        Patchify(48, (2, 4, 6), 3)


def test_tarflow_block_is_causal_and_cache_free_inverse_agrees():
    for reverse in (False, True):
        torch.manual_seed(0)
        block = _perturb(_tarflow_block(K, reverse).double(), 0).eval()
        x = torch.randn(3, 2, dtype=F64)
        context = F.one_hot(torch.tensor([1]), K).to(F64)
        jac = torch.autograd.functional.jacobian(
            lambda v, b=block, c=context: b(v[None], c)[0][0], x
        )  # (3, 2, 3, 2)
        token_jac = jac.abs().sum(dim=(1, 3))  # token i's output on token j's input
        strictly_later = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
        forbidden = strictly_later.T if reverse else strictly_later
        assert torch.all(token_jac[forbidden] == 0)
        assert torch.all(token_jac[~forbidden] > 0)
        z = torch.randn(5, 3, 2, dtype=F64)
        contexts = F.one_hot(torch.arange(5) % K, K).to(F64)
        with torch.no_grad():
            cached = block.inverse(z, contexts)
            block.use_cache = False
            uncached = block.inverse(z, contexts)
        for a, b in zip(cached, uncached):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _token_affine_params(block, x, context):
    """Shift and log-scale of every token at ``x``, read off the forward map (it is affine in token i)."""
    mu, alpha = torch.empty_like(x), torch.empty_like(x)
    z, _ = block(x, context)
    for i in range(x.shape[1]):
        moved = x.clone()
        moved[:, i] += 1.0  # token i's parameters depend on the other tokens only
        slope = block(moved, context)[0][:, i] - z[:, i]  # exp(-alpha_i)
        alpha[:, i] = -torch.log(slope)
        mu[:, i] = x[:, i] - z[:, i] / slope
    return mu, alpha


@pytest.mark.parametrize("reverse", [False, True])
def test_tarflow_block_null_context_and_guidance(reverse):
    torch.manual_seed(0)
    block = _perturb(_tarflow_block(K, reverse).double(), 0).eval()
    z = torch.randn(5, 3, 2, dtype=F64)
    context = F.one_hot(torch.arange(5) % K, K).to(F64)
    null = torch.zeros_like(context)
    with torch.no_grad():
        # no context is the null (all-zero) class
        for a, b in zip(block(z, None), block(z, null)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        plain = block.inverse(z, context)
        w = 1.5
        with guided(block, w):
            assert block.guidance == w
            x, ladj = block.inverse(z, context)
        assert block.guidance == 0.0
        torch.testing.assert_close(block.inverse(z, context)[0], plain[0], rtol=0, atol=0)
        assert (x - plain[0]).abs().amax() > 1e-3
        # guided parameters a + w (a - a_null) at the guided sample map it back to z
        mu_c, alpha_c = _token_affine_params(block, x, context)
        mu_n, alpha_n = _token_affine_params(block, x, null)
        mu, alpha = mu_c + w * (mu_c - mu_n), alpha_c + w * (alpha_c - alpha_n)
        torch.testing.assert_close((x - mu) * torch.exp(-alpha), z, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(ladj, alpha.sum(dim=(1, 2)), rtol=1e-8, atol=1e-8)
        block.use_cache = False
        with guided(block, w):
            torch.testing.assert_close(block.inverse(z, context)[0], x, rtol=1e-10, atol=1e-10)
    with pytest.raises(RuntimeError), guided(block, 2.0):
        raise RuntimeError
    assert block.guidance == 0.0
    assert all(m.cache is None for m in block.modules() if hasattr(m, "cache"))


# --------------------------------------------------------------------------- dequantizers


def _levels(shape, n_bins, seed=0):
    return torch.randint(0, n_bins, shape, generator=torch.Generator().manual_seed(seed)).to(F64)


def _noise(shape, seed=1):
    return 0.001 + 0.998 * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _variational(n_bins=5, image_shape=(1, 2, 2), seed=0):
    torch.manual_seed(seed)
    return _perturb(VariationalDequantization(n_bins, image_shape, hidden_channels=6).double(), seed)


@pytest.mark.parametrize("shape", [(6, 7), (6, 2, 3, 3)], ids=["rows", "images"])
def test_uniform_dequantization(shape):
    deq = UniformDequantization(n_bins=5)
    x, v = _levels(shape, 5), _noise(shape)
    y, log_q = deq(x, v)
    assert y.shape == shape and log_q.shape == (6,)
    torch.testing.assert_close(y, (x + v) / 5)
    assert torch.all((y * 5 >= x) & (y * 5 < x + 1))
    dim = math.prod(shape[1:])
    torch.testing.assert_close(log_q, torch.full((6,), dim * math.log(5), dtype=F64))


def test_variational_dequantization_cells_layouts_and_gradients():
    deq = _variational(n_bins=5, image_shape=(2, 3, 3))
    x, v = _levels((6, 2, 3, 3), 5), _noise((6, 2, 3, 3))
    y, log_q = deq(x, v)
    assert y.shape == x.shape and log_q.shape == (6,)
    assert torch.all((y * 5 >= x) & (y * 5 < x + 1))
    y_flat, log_q_flat = deq(x.reshape(6, -1), v.reshape(6, -1))  # flat rows: same map
    assert y_flat.shape == (6, 18)
    torch.testing.assert_close(y_flat, y.reshape(6, -1), rtol=0, atol=0)
    torch.testing.assert_close(log_q_flat, log_q, rtol=0, atol=0)
    # q(u | x) depends on x, not only on the noise
    assert (deq(x.roll(1, 0), v)[0] - x.roll(1, 0) / 5 - (y - x / 5)).abs().amax() > 1e-4
    (log_q.sum() + y.square().sum()).backward()
    for name, p in deq.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name


def test_variational_dequantization_log_q_is_change_of_variables():
    """``q(y | x) = p(v) / |det dy/dv|`` with ``v`` uniform, so ``log q = -log|det dy/dv|``."""
    deq = _variational(n_bins=5, image_shape=(2, 2, 2))
    x, v = _levels((3, 2, 2, 2), 5), _noise((3, 2, 2, 2))
    _, log_q = deq(x, v)
    jac = _batch_jacobian(lambda u: deq(x, u)[0], v)
    torch.testing.assert_close(log_q, -_slogdet(jac), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("level", [0.0, 3.0])
def test_variational_dequantization_density_integrates_to_one(level):
    """One-pixel image: ``q(y | x)`` integrates to 1 over its cell (trapezoid over ``y``)."""
    deq = _variational(n_bins=4, image_shape=(1, 1, 1))
    v = torch.linspace(1e-6, 1 - 1e-6, 40001, dtype=F64)[:, None]
    x = torch.full_like(v, level)
    with torch.no_grad():
        y, log_q = deq(x, v)
    y = y[:, 0]
    assert torch.all(torch.diff(y) > 0)  # monotone in the noise
    assert float(y[0]) >= level / 4 and float(y[-1]) < (level + 1) / 4
    total = torch.trapezoid(torch.exp(log_q), y).item()
    assert abs(total - 1) < 2e-3, total
    # and the map is not the uniform one
    assert torch.exp(log_q).std() > 0.1


# --------------------------------------------------------------------------- distributions

LOG_2PI = math.log(2 * math.pi)


def _grid(lim, n):
    return torch.linspace(-lim, lim, n, dtype=F64)


def _integrate(log_prob, dim, lim=9.0, n=301):
    grid = _grid(lim, n)
    if dim == 1:
        return torch.trapezoid(torch.exp(log_prob(grid[:, None])), grid).item()
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    density = torch.exp(log_prob(torch.stack([xx.ravel(), yy.ravel()], 1))).reshape(n, n)
    return torch.trapezoid(torch.trapezoid(density, grid), grid).item()


def _quadrature_moments(log_prob, lim=9.0, n=301):
    grid = _grid(lim, n)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    w = torch.exp(log_prob(pts)) * (grid[1] - grid[0]) ** 2
    mean = (w[:, None] * pts).sum(0)
    centred = pts - mean
    return mean, (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)


def _mixture_reference(logits, loc, scale):
    """``MixtureSameFamily`` over the last dim of the (n, components) parameters."""
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits), torch.distributions.Normal(loc, scale)
    )


def _distribution(name, dim, seed=0):
    torch.manual_seed(seed)
    dist = {
        "normal": lambda: StandardNormal(dim),
        "diagonal": lambda: DiagonalNormal(dim),
        "mixture": lambda: GaussianMixture(dim, 3),
        "made_mixture": lambda: MADEMixture(dim, 3, (16,), torch.arange(dim).flip(0)),
        "made_mixture_context": lambda: MADEMixture(dim, 3, (16,), context_features=K),
    }[name]().double()
    return _perturb(dist, seed, scale=0.3)


DISTRIBUTIONS = ["normal", "diagonal", "mixture", "made_mixture", "made_mixture_context"]


def _dist_context(name, n, seed=5):
    if not name.endswith("context"):
        return None
    return torch.randn(1, K, generator=torch.Generator().manual_seed(seed), dtype=F64).expand(n, K)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_distribution_log_prob_matches_reference(name):
    dist = _distribution(name, 2)
    z = 1.5 * torch.randn(7, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    context = _dist_context(name, 7)
    with torch.no_grad():
        got = dist.log_prob(z, context)
        if name == "normal":
            expected = -0.5 * z.square().sum(1) - LOG_2PI
        elif name == "diagonal":
            expected = torch.distributions.Normal(dist.loc, dist.log_scale.exp()).log_prob(z).sum(1)
        elif name == "mixture":
            components = torch.distributions.Independent(
                torch.distributions.Normal(dist.loc, dist.log_scale.exp()), 1
            )
            mix = torch.distributions.MixtureSameFamily(
                torch.distributions.Categorical(logits=dist.logits), components
            )
            expected = mix.log_prob(z)
        else:
            h = dist.made(z, context).view(7, 3, 3, 2)  # (n, [logit, loc, raw scale], component, feature)
            log_scale = 3.0 * torch.tanh(h[:, 2] / 3.0)
            expected = sum(
                _mixture_reference(h[:, 0, :, i], h[:, 1, :, i], log_scale[:, :, i].exp()).log_prob(z[:, i])
                for i in range(2)
            )
    assert got.shape == (7,)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("dim", [1, 2])
def test_distribution_integrates_to_one(name, dim):
    dist = _distribution(name, dim)
    with torch.no_grad():
        for seed in (5, 6):
            total = _integrate(lambda z, s=seed: dist.log_prob(z, _dist_context(name, len(z), s)), dim)
            assert abs(total - 1) < 1e-3, (seed, total)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_distribution_samples_seeded_and_distributed(name):
    dist = _distribution(name, 2)
    n = 20000
    context = _dist_context(name, n)
    with torch.no_grad():
        samples = dist.sample(n, context, torch.Generator().manual_seed(1))
        again = dist.sample(n, context, torch.Generator().manual_seed(1))
        other = dist.sample(n, context, torch.Generator().manual_seed(2))
        mean, cov = _quadrature_moments(lambda z: dist.log_prob(z, _dist_context(name, len(z))))
    assert samples.shape == (n, 2) and samples.dtype == F64
    torch.testing.assert_close(again, samples, rtol=0, atol=0)
    assert not torch.allclose(other, samples)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.1, rtol=0.05)


def test_made_mixture_context_changes_density_and_samples():
    dist = _distribution("made_mixture_context", 2)
    z = torch.randn(10, 2, dtype=F64)
    c1, c2 = _dist_context("made_mixture_context", 10, 5), _dist_context("made_mixture_context", 10, 6)
    with torch.no_grad():
        assert (dist.log_prob(z, c1) - dist.log_prob(z, c2)).abs().amax() > 1e-3
        s1 = dist.sample(10, c1, torch.Generator().manual_seed(0))
        s2 = dist.sample(10, c2, torch.Generator().manual_seed(0))
    assert (s1 - s2).abs().amax() > 1e-3


def test_standard_normal_event_shape():
    dist = StandardNormal(3, 2).double()
    samples = dist.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 3, 2) and samples.dtype == F64
    expected = -0.5 * samples.square().sum((1, 2)) - 3 * LOG_2PI
    torch.testing.assert_close(dist.log_prob(samples), expected)


# --------------------------------------------------------------------------- flows


def _conditional_flow(context):
    torch.manual_seed(0)
    transform = Compose(
        MaskedAffineAutoregressive(2, (8,), context_features=context),
        MaskedAutoregressive(2, (8,), torch.arange(2).flip(0), _spline(), context),
        AffineCoupling(alternating_masks(2, 2)[0], MLP(2 + context, 4, (8,))),
    )
    base = MADEMixture(2, 2, (8,), context_features=context) if context else StandardNormal(2)
    return _perturb(Flow(transform, base).double(), 0, scale=0.3).eval()


@pytest.mark.parametrize("context", [0, K])
def test_flow_shapes_sampling_and_normalisation(context):
    flow = _conditional_flow(context)
    c = torch.randn(1, K, dtype=F64).expand(50, K) if context else None
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob(50, c, torch.Generator().manual_seed(0))
        assert x.shape == (50, 2) and log_q.shape == (50,)
        torch.testing.assert_close(log_q, flow.log_prob(x, c), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(flow(x, c), flow.log_prob(x, c))
        torch.testing.assert_close(flow.sample(50, c, torch.Generator().manual_seed(0)), x, rtol=0, atol=0)
        total = _integrate(
            lambda z: flow.log_prob(z, None if c is None else c[:1].expand(len(z), K)), 2, 12, 401
        )
    assert abs(total - 1) < 2e-3, total


def test_tarflow_flow_shapes_and_consistency():
    torch.manual_seed(0)
    flow = _perturb(Flow(_tarflow(K), StandardNormal(4, 2)).double(), 0, scale=0.3).eval()
    c = F.one_hot(torch.arange(6) % K, K).to(F64)
    with torch.no_grad():
        x, log_q = flow.rsample_and_log_prob(6, c, torch.Generator().manual_seed(0))
        assert x.shape == (6, 8) and log_q.shape == (6,)
        torch.testing.assert_close(log_q, flow.log_prob(x, c), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "estimator",
    [
        MADEDensity(hidden_features=(16,)),
        MADEDensity(n_components=3, order="random", hidden_features=(16,)),
        MAFDensity(n_transforms=3, hidden_features=(16,)),
        MAFDensity(n_transforms=3, batch_norm=True, hidden_features=(16,)),
        IAFDensity(n_transforms=2, hidden_features=(16,)),
        NSFDensity(n_transforms=2, hidden_features=(16,)),
        RealNVPDensity(n_transforms=4, batch_norm=True, hidden_features=(16,)),
        RealNVPDensity(n_transforms=2, coupling_map="spline", hidden_features=(16,)),
    ],
    ids=["made", "made_mog", "maf", "maf_bn", "iaf", "nsf", "realnvp_bn", "realnvp_spline"],
)
@pytest.mark.parametrize("context", [0, K])
def test_untrained_flow_is_its_base_density(estimator, context):
    torch.manual_seed(0)
    flow = estimator._build_flow(D, context).double().eval()
    x = torch.randn(20, D, dtype=F64)
    c = torch.randn(20, context, dtype=F64) if context else None
    with torch.no_grad():
        z, ladj = flow.transform(x, c)
        # exact identity, up to batch norm's eps in eval mode
        torch.testing.assert_close(z, x, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ladj, torch.zeros(20, dtype=F64), rtol=0, atol=1e-3)
        if type(flow.base) is StandardNormal:
            expected = -0.5 * (x**2).sum(1) - 0.5 * D * LOG_2PI
            torch.testing.assert_close(flow.log_prob(x, c), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("variational", [False, True])
def test_dequantized_flow(variational):
    torch.manual_seed(0)
    n_bins, shape = 4, (1, 2, 2)
    inner = Flow(Compose(Logit(0.05), MaskedAffineAutoregressive(4, (8,))), StandardNormal(4))
    deq = (
        VariationalDequantization(n_bins, shape, hidden_channels=4)
        if variational
        else UniformDequantization(n_bins)
    )
    model = _perturb(DequantizedFlow(inner.double(), deq.double()), 0, scale=0.3).eval()
    x, v = _levels((5, 4), n_bins), _noise((5, 4))
    with torch.no_grad():
        log_p = model.log_prob(x, noise=v)
        y, log_q = deq(x, v)
        assert log_p.shape == (5,)
        torch.testing.assert_close(log_p, inner.log_prob(y) - log_q)
        torch.testing.assert_close(model(x, None, v), log_p)
        torch.testing.assert_close(model.quantize(y), x, rtol=0, atol=0)
        samples = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 4)
    assert torch.all(samples == samples.round()) and samples.min() >= 0 and samples.max() <= n_bins - 1
    with pytest.raises(ValueError, match="noise"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="noise"):
        model(x)
