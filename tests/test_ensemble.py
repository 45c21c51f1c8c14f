"""The ensemble engine and the public context path that the meta-estimators are built on.

Stacked members (one module, weights with a member axis) must compute exactly what
the members compute alone, get exactly their own gradients, stop early each on its
own validation rows, and give fitted densities as good as members fitted one by one.
"""

import pickle

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from sklearn.base import clone

from skflow import MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from skflow.estimators.density import _split_indices
from skflow.models.distributions import CategoricalMADE
from skflow.models.flow import MixedFlow
from skflow.estimators.ensemble import fit_members, member_seeds
from skflow.training import NegativeLogLikelihood
from skflow.training.stacked import StackedMembers

SMALL = {"n_transforms": 2, "hidden_features": (8, 8), "max_epochs": 15}


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1))
    return np.hstack([x, x**2 + 0.3 * rng.normal(size=(n, 1)), rng.integers(0, 4, size=(n, 1))])


def _modules(estimator, n_features, n_context, k, seed=0):
    estimator.table_ = None
    torch.manual_seed(seed)
    return [estimator._build_module(n_features, n_context).double() for _ in range(k)]


@pytest.mark.parametrize(
    "estimator",
    [
        NSFDensity(**SMALL),
        MAFDensity(**SMALL),
        MAFDensity(**SMALL, batch_norm=True, base="normal"),
        RealNVPDensity(**SMALL, coupling_map="spline"),
        MADEDensity(hidden_features=(8,), n_components=3),
    ],
    ids=["nsf", "maf-made-mixture", "maf-batch-norm", "realnvp-spline", "made-mog"],
)
@pytest.mark.parametrize("n_context", [0, 2])
def test_stacked_members_compute_and_differentiate_as_alone(estimator, n_context):
    """Log-densities and the gradient of each member's loss equal the member's own, in float64."""
    modules = _modules(estimator, 3, n_context, k=3)
    stack = StackedMembers(modules).double()
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(3, 17, 3, generator=rng, dtype=torch.float64)
    context = torch.randn(3, 17, n_context, generator=rng, dtype=torch.float64) if n_context else None
    for module in modules:
        module.eval()
    stack.eval()
    log_prob = stack(x, context)
    for k, module in enumerate(modules):
        alone = module(x[k], None if context is None else context[k])
        torch.testing.assert_close(log_prob[k], alone, rtol=1e-12, atol=1e-12)
    NegativeLogLikelihood()(log_prob).backward()
    for k, module in enumerate(modules):
        module.zero_grad()
        NegativeLogLikelihood()(module(x[k], None if context is None else context[k])).backward()
        stacked = dict(zip(stack._param_names, stack.weights))
        for name, param in module.named_parameters():
            if param.grad is not None:
                torch.testing.assert_close(stacked[name].grad[k], param.grad, rtol=1e-10, atol=1e-12)


def test_loss_counts_only_the_members_still_training():
    """A stopped member adds nothing to the loss, also through the importance weights of filled rows."""
    log_prob = torch.randn(3, 8, dtype=torch.float64)
    log_q = torch.randn(3, 4, 2, dtype=torch.float64)  # 4 rows, 2 filled draws each
    weight = torch.ones(3, 4, dtype=torch.float64)
    members = torch.tensor([True, False, True])
    loss = NegativeLogLikelihood()
    for target, value in [(None, log_prob), ((weight, log_q), log_prob)]:
        alone = [loss(value[k : k + 1], None if target is None else (weight[k : k + 1], log_q[k : k + 1]))
                 for k in range(3)]
        torch.testing.assert_close(loss(value, target, members=members), alone[0] + alone[2])
        torch.testing.assert_close(loss(value, target), alone[0] + alone[1] + alone[2])


def test_masked_layer_models_stack_without_vmap():
    """Models whose only weights are masked layers take the batched-matrix path; the rest (batch norm,
    coupling layers, a trainable base) use vmap. Both paths are checked against the members above and
    below (the mixed-table model takes the batched path)."""
    expected = {"nsf": True, "maf-made-mixture": True, "made-mog": True, "maf-batch-norm": False,
                "realnvp-spline": False}
    estimators = {"nsf": NSFDensity(**SMALL), "maf-made-mixture": MAFDensity(**SMALL),
                  "made-mog": MADEDensity(hidden_features=(8,), n_components=3),
                  "maf-batch-norm": MAFDensity(**SMALL, batch_norm=True, base="normal"),
                  "realnvp-spline": RealNVPDensity(**SMALL, coupling_map="spline")}
    for name, estimator in estimators.items():
        assert StackedMembers(_modules(estimator, 3, 2, k=2)).native is expected[name], name
    diagonal = MAFDensity(**SMALL, base="diagonal")  # a weight outside a masked layer
    assert not StackedMembers(_modules(diagonal, 3, 0, k=2)).native


def test_batched_matrix_and_vmap_paths_train_alike(monkeypatch):
    """The batched-matrix path skips stopped members; vmap computes them but masks them out of the
    loss. Both give the same members, stop epochs and training losses (the members still training)."""
    X = _data()
    estimator = NSFDensity(n_transforms=1, hidden_features=(8,), max_epochs=30, patience=2, lr=3e-2)
    seeds = member_seeds(3, 1)
    native = fit_members(estimator, seeds, X)
    monkeypatch.setattr("skflow.training.stacked._natively_stackable", lambda *args: False)
    vmapped = fit_members(estimator, seeds, X)
    assert [m.n_iter_ for m in native] == [m.n_iter_ for m in vmapped]
    assert len({m.n_iter_ for m in native}) > 1  # members stopped before the end
    np.testing.assert_allclose(native[0].history_[:, "train_loss"], vmapped[0].history_[:, "train_loss"],
                               rtol=1e-4)
    for a, b in zip(native, vmapped):
        np.testing.assert_allclose(a.score_samples(X[:50]), b.score_samples(X[:50]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_context", [0, 2])
def test_stacked_mixed_table_models_compute_as_alone(n_context):
    """A mixed-table model (categorical MADE x flow given the codes) stacks too."""
    torch.manual_seed(0)
    discrete = torch.tensor([False, True, False, True])
    modules = []
    for _ in range(2):
        categorical = CategoricalMADE([3, 2], (8,), n_context)
        flow = NSFDensity(**SMALL)._build_flow(2, n_context + 5)
        modules.append(MixedFlow(categorical, flow, discrete).double().eval())
    stack = StackedMembers(modules).double().eval()
    assert stack.native  # every weight is a masked layer's
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    x[..., 1] = torch.randint(0, 3, (2, 11)).double()
    x[..., 3] = torch.randint(0, 2, (2, 11)).double()
    context = torch.randn(2, 11, n_context, dtype=torch.float64) if n_context else None
    log_prob = stack(x, context)
    for k, module in enumerate(modules):
        alone = module(x[k], None if context is None else context[k])
        torch.testing.assert_close(log_prob[k], alone, rtol=1e-12, atol=1e-12)


def test_unstack_gives_each_member_its_weights():
    modules = _modules(NSFDensity(**SMALL), 3, 0, k=2)
    stack = StackedMembers(modules)
    with torch.no_grad():
        for weight in stack.weights:
            weight.add_(1.0)
    fresh = _modules(NSFDensity(**SMALL), 3, 0, k=2, seed=5)
    stack.unstack(fresh)
    for k, module in enumerate(fresh):
        for (name, param), stacked in zip(module.named_parameters(), stack.weights):
            assert name in stack._param_names
            torch.testing.assert_close(param, stacked[k].detach())


def _early_stopping(losses, patience):
    """Reference: (best loss, epochs run) of skorch's EarlyStopping rule on one member's losses."""
    best, wait = np.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        if wait >= patience:
            return best, epoch
    return best, len(losses)


def test_each_member_stops_as_it_would_alone():
    """Each member keeps its best weights up to the epoch its own early stopping ends it; the stack
    runs until the last member stops."""
    X = _data()
    estimator = NSFDensity(n_transforms=1, hidden_features=(8,), max_epochs=60, patience=3, lr=3e-2)
    seeds = member_seeds(3, 0)
    members = fit_members(estimator, seeds, X)
    per_member = np.array(members[0].history_[:, "valid_loss_members"])  # (epochs, members)
    reference = [_early_stopping(column, patience=3) for column in per_member.T]
    assert per_member.shape == (max(epochs for _, epochs in reference), 3)
    assert [member.n_iter_ for member in members] == [epochs for _, epochs in reference]
    assert len({epochs for _, epochs in reference}) > 1  # the members stop at different epochs
    for k, (member, seed) in enumerate(zip(members, seeds)):
        rng = np.random.RandomState(seed)
        rng.randint(np.iinfo(np.int32).max - 1, size=2)  # the member's initialisation and loop seeds
        _, valid = _split_indices(len(X), 0.1, rng)
        Z = torch.as_tensor(member.standardizer_.transform(X[valid]), dtype=torch.float32)
        with torch.no_grad():
            loss = -float(member.net_.module_.eval()(Z).double().mean())
        assert loss == pytest.approx(reference[k][0], abs=1e-4)


def test_stacked_members_match_members_fitted_alone():
    """Held-out log-likelihoods of stacked and one-by-one members agree within their seed spread."""
    X = _data(600, seed=1)
    train, test = X[:400], X[400:]
    estimator = NSFDensity(n_transforms=2, hidden_features=(16, 16), max_epochs=40)
    seeds = member_seeds(4, 3)
    stacked = [m.score(test) for m in fit_members(estimator, seeds, train)]
    alone = [m.score(test) for m in fit_members(estimator, seeds, train, stack=False)]
    spread = np.std(stacked + alone, ddof=1)
    assert abs(np.mean(stacked) - np.mean(alone)) < 2 * spread + 0.05


def test_stacked_fit_is_reproducible_and_members_are_complete_estimators():
    X = _data()
    seeds = member_seeds(2, 7)
    a = fit_members(NSFDensity(**SMALL), seeds, X)
    b = fit_members(NSFDensity(**SMALL), seeds, X)
    for m, n in zip(a, b):
        np.testing.assert_array_equal(m.score_samples(X[:20]), n.score_samples(X[:20]))
    loaded = pickle.loads(pickle.dumps(a[1]))
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), a[1].score_samples(X[:20]))
    draws = a[0].sample(50, random_state=0)
    assert draws.shape == (50, 3) and np.all(draws[:, 2] == np.round(draws[:, 2]))  # integer column kept
    assert not np.allclose(a[0].score_samples(X[:20]), a[1].score_samples(X[:20]))


def test_stacking_falls_back_where_it_cannot_apply():
    X = _data(100)
    from skorch.callbacks import Callback

    class Count(Callback):
        def on_train_begin(self, net, **kwargs):
            pass

    estimator = NSFDensity(**SMALL, callbacks=[Count()])
    assert not estimator._can_stack()
    members = fit_members(estimator, member_seeds(2, 0), X)
    assert len(members) == 2 and members[0].random_state != members[1].random_state


# ------------------------------------------------------------------- the public context path
@pytest.fixture(scope="module")
def conditional():
    rng = np.random.default_rng(0)
    c = rng.uniform(-2, 2, size=(400, 1))
    x = np.sin(2 * c) + 0.2 * rng.normal(size=(400, 1))
    return (
        MAFDensity(n_transforms=2, hidden_features=(16,), max_epochs=40, random_state=0).fit(x, context=c),
        x,
        c,
    )


def test_context_density_integrates_to_one_and_is_in_data_units(conditional):
    model, x, c = conditional
    for value in (-1.5, 0.3):
        mass = quad(lambda v: np.exp(model.score_samples([[v]], context=[[value]])[0]), -15, 15, limit=200)[0]
        assert mass == pytest.approx(1.0, abs=2e-3)
    scaled = clone(model).fit(3.0 * x, context=c)
    np.testing.assert_allclose(
        scaled.score_samples(3.0 * x[:10], context=c[:10]),
        model.score_samples(x[:10], context=c[:10]) - np.log(3.0),
        atol=1e-9,
    )


def test_context_changes_the_density_and_samples_follow_it(conditional):
    model, x, c = conditional
    grid = np.linspace(-4, 4, 2001)[:, None]
    means = []
    for value in (0.8, -1.0):
        draws = model.sample(4000, random_state=0, context=[value])
        assert draws.shape == (4000, 1)
        density = np.exp(model.score_samples(grid, context=np.full_like(grid, value)))
        means.append(np.trapezoid(grid[:, 0] * density, grid[:, 0]))
        assert np.mean(draws) == pytest.approx(
            means[-1], abs=0.05
        )  # draws follow the density given the context
    assert means[0] > means[1] + 0.3  # and the density follows the context (sin(1.6) > sin(-2))
    per_row = model.sample(3, random_state=0, context=c[:3])
    assert per_row.shape == (3, 1)
    assert model.score(x, context=c) > model.score(x, context=-c) + 0.5


def test_context_errors(conditional):
    model, x, c = conditional
    with pytest.raises(ValueError, match="context="):
        model.score_samples(x)
    with pytest.raises(ValueError, match="features"):
        model.score_samples(x, context=np.hstack([c, c]))
    with pytest.raises(ValueError, match="samples"):
        model.score_samples(x, context=c[:5])
    with pytest.raises(ValueError, match="infinity"):
        model.score_samples(x, context=np.full_like(c, np.inf))
    plain = MAFDensity(n_transforms=1, hidden_features=(8,), max_epochs=2, random_state=0).fit(x)
    with pytest.raises(ValueError, match="without one"):
        plain.score_samples(x, context=c)
    with pytest.raises(ValueError, match="context_noise"):
        MAFDensity(context_noise=-1.0).fit(x, context=c)


def test_labels_and_context_together():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    c = rng.normal(size=(300, 1))
    x = (2 * y - 1)[:, None] + c + 0.3 * rng.normal(size=(300, 1))
    model = MAFDensity(n_transforms=1, hidden_features=(16,), max_epochs=30, random_state=0).fit(
        x, y, context=c
    )
    assert model.predict_proba(x[:5], context=c[:5]).shape == (5, 2)
    accuracy = np.mean(model.predict(x, context=c) == y)
    assert accuracy > 0.85
    draws = model.sample(500, random_state=0, y=1, context=[0.0])
    assert np.mean(draws) == pytest.approx(1.0, abs=0.15)


def test_dataframe_context_with_strings():
    import pandas as pd

    rng = np.random.default_rng(0)
    group = rng.choice(["a", "b"], size=300)
    context = pd.DataFrame({"group": group, "size": rng.normal(size=300)})
    x = np.where(group == "a", -2.0, 2.0)[:, None] + 0.3 * rng.normal(size=(300, 1))
    model = MAFDensity(n_transforms=1, hidden_features=(16,), max_epochs=40, random_state=0).fit(
        x, context=context
    )
    assert model.n_context_features_ == 3  # two indicators and the number
    a = context.iloc[:1].assign(group="a")
    assert model.score_samples([[-2.0]], context=a)[0] > model.score_samples([[2.0]], context=a)[0] + 2
    unseen = context.iloc[:1].assign(group="c")  # all-zero indicators: still a finite density
    assert np.isfinite(model.score_samples([[0.0]], context=unseen)[0])
    draws = model.sample(500, random_state=0, context=pd.concat([a] * 500, ignore_index=True))
    assert np.mean(draws) == pytest.approx(-2.0, abs=0.3)
