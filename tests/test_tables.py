"""Mixed-type tables: discrete columns modelled exactly, continuous ones given them."""

import itertools
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skflow import FlowOutlierDetector, MADEDensity, MAFDensity, NSFDensity, RealNVPDensity
from skflow.data.columns import TableEncoder, is_mixed_table
from skflow.models.distributions import CategoricalMADE

FAST = dict(hidden_features=(16,), max_epochs=15, random_state=0)


def _table(n=120, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2])
    flag = rng.random(n) < 0.4
    size = pd.Categorical(rng.choice(["S", "M"], n), categories=["S", "M", "L"])
    value = np.where(colour == "red", 2.0, -1.0) + rng.normal(size=n)
    count = rng.poisson(3, n)
    return pd.DataFrame({"colour": colour, "flag": flag, "size": size, "value": value, "count": count})


def _codes(df, encoder):
    return encoder.transform(df)


def test_encoder_round_trip_keeps_dtypes():
    df = _table()
    encoder = TableEncoder().fit(df)
    assert is_mixed_table(df) and not is_mixed_table(df[["value", "count"]])
    assert list(encoder.discrete_) == [True, True, True, False, False]
    assert encoder.cardinalities_ == [3, 2, 3]  # a category dtype keeps its unused category "L"
    back = encoder.inverse_transform(encoder.transform(df))
    pd.testing.assert_frame_equal(back, df)


def test_categorical_made_sums_to_one_over_every_combination():
    torch.manual_seed(0)
    model = CategoricalMADE([3, 2, 4], (16, 16), context_features=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    context = torch.randn(1, 2, dtype=torch.float64)
    seen = torch.tensor(list(itertools.product(range(3), range(2), range(4))))
    with_unseen = torch.tensor(list(itertools.product(range(-1, 3), range(-1, 2), range(-1, 4))))
    total_seen = model.log_prob(seen, context.expand(len(seen), 2)).exp().sum()
    total = model.log_prob(with_unseen, context.expand(len(with_unseen), 2)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))
    assert 1 - 3e-3 < float(total_seen.detach()) < 1.0  # the unseen reserve is 1e-3 per column


def test_fitted_discrete_part_is_exact_and_continuous_part_integrates_to_one():
    df = _table()[["colour", "flag", "value"]]
    est = MAFDensity(n_transforms=2, **FAST).fit(df)
    total = 0.0
    for colour, flag in itertools.product(["red", "green", "blue"], [False, True]):

        def density(v, colour=colour, flag=flag):
            row = pd.DataFrame({"colour": [colour], "flag": [flag], "value": [v]})
            return np.exp(est.score_samples(row)[0])

        mass = quad(density, -30, 30, limit=200, points=[-1.0, 2.0])[0]
        module = est.net_.module_
        codes = torch.as_tensor(est.table_.transform(df.iloc[:1].assign(colour=colour, flag=flag)))
        discrete = float(module.categorical.log_prob(codes[:, :2].long()).exp().detach())
        assert mass == pytest.approx(discrete, rel=2e-3)  # p(value | cells) integrates to 1 given each cell
        total += mass
    assert total == pytest.approx(1.0, abs=2e-3)  # the seen cells hold all but the unseen reserve


@pytest.mark.parametrize(
    "estimator",
    [
        MAFDensity(n_transforms=2, **FAST),
        MADEDensity(**FAST),
        NSFDensity(n_transforms=1, **FAST),
        RealNVPDensity(n_transforms=2, **FAST),
    ],
)
def test_every_tabular_density_takes_a_mixed_table(estimator):
    df = _table()
    est = estimator.fit(df)
    scores = est.score_samples(df)
    assert scores.shape == (len(df),) and np.all(np.isfinite(scores))
    sample = est.sample(50, random_state=0)
    assert list(sample.columns) == list(df.columns)
    assert (sample.dtypes == df.dtypes).all()
    assert set(sample["colour"]) <= {"red", "green", "blue"}
    assert sample["count"].dtype == np.int64


def test_only_categorical_columns_and_a_single_category():
    df = pd.DataFrame({"a": ["x", "y", "x", "x"] * 10, "b": ["k"] * 40})
    est = MADEDensity(**FAST).fit(df)
    probs = np.exp(est.score_samples(pd.DataFrame({"a": ["x", "y"], "b": ["k", "k"]})))
    assert probs.sum() == pytest.approx(1.0, abs=3e-3)
    assert probs[0] > probs[1]
    assert set(est.sample(20, random_state=0)["b"]) == {"k"}


def test_unseen_category_gets_a_small_finite_probability():
    df = _table()
    est = MAFDensity(n_transforms=2, **FAST).fit(df)
    row = df.iloc[:1].copy()
    odd = row.assign(colour="purple")
    seen, unseen = est.score_samples(row)[0], est.score_samples(odd)[0]
    assert np.isfinite(unseen) and unseen < seen - 3  # about log(1e-3 / 4) for that cell


def test_numpy_input_is_unchanged_and_mixed_tables_need_a_dataframe():
    df = _table()
    numeric = df[["value", "count"]].to_numpy(dtype=float)
    est = MAFDensity(n_transforms=2, **FAST).fit(numeric)
    assert est.table_ is None and isinstance(est.sample(3, random_state=0), np.ndarray)
    mixed = MAFDensity(n_transforms=2, **FAST).fit(df)
    with pytest.raises(ValueError, match="feature names|columns seen in fit"):
        mixed.score_samples(df.drop(columns="flag"))


def test_nullable_dtypes_and_missing_values():
    df = _table()
    nullable = df.assign(count=df["count"].astype("Int64"), flag=df["flag"].astype("boolean"))
    est = MAFDensity(n_transforms=2, **FAST).fit(nullable)
    assert np.all(np.isfinite(est.score_samples(nullable)))
    assert est.sample(5, random_state=0)["count"].dtype == "Int64"
    # missing cells, of a category or a number, are missing cells (tests/test_missing.py)
    gaps = nullable.assign(colour=df["colour"].where(df.index > 0), count=nullable["count"].where(df.index > 1))
    est = MAFDensity(**FAST).fit(gaps)
    assert np.all(np.isfinite(est.score_samples(gaps)))
    with pytest.raises(ValueError, match="every cell missing"):
        est.score_samples(gaps.iloc[:1].map(lambda v: None).astype(gaps.dtypes.to_dict()))


def test_deterministic_picklable_and_in_a_grid_search():
    df = _table()
    a = MAFDensity(n_transforms=2, **FAST).fit(df)
    b = MAFDensity(n_transforms=2, **FAST).fit(df)
    np.testing.assert_array_equal(a.score_samples(df), b.score_samples(df))
    pd.testing.assert_frame_equal(a.sample(5, random_state=1), b.sample(5, random_state=1))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.score_samples(df), c.score_samples(df))
    pipe = make_pipeline(FunctionTransformer(lambda d: d, feature_names_out="one-to-one"), MAFDensity(**FAST))
    search = GridSearchCV(pipe, {"mafdensity__n_transforms": [1, 2]}, cv=2).fit(df)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # every candidate fitted and scored


def test_class_conditional_mixed_table():
    df = _table()
    y = np.where(df["value"] > 0.5, "high", "low")
    est = MAFDensity(n_transforms=2, **FAST).fit(df.drop(columns="value").assign(v=df["value"]), y)
    X = df.drop(columns="value").assign(v=df["value"])
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert est.sample(4, y="high", random_state=0).shape == (4, 5)


def test_outlier_detector_on_a_mixed_table():
    df = _table(200)
    detector = FlowOutlierDetector(MAFDensity(n_transforms=2, **FAST), random_state=0).fit(df)
    odd = df.iloc[:2].assign(value=[40.0, -40.0])
    assert list(detector.predict(odd)) == [-1, -1]
    assert detector.decision_function(df).shape == (len(df),)


def test_category_frequencies_are_learned_on_a_small_table():
    # the first discrete column's distribution is the output bias alone: it starts at the frequencies
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"c": rng.choice(["a", "b"], 300, p=[0.9, 0.1]), "x": rng.normal(size=300)})
    est = MAFDensity(n_transforms=1, **FAST).fit(df)
    share = (est.sample(4000, random_state=0)["c"] == "a").mean()
    assert share == pytest.approx((df["c"] == "a").mean(), abs=0.04)


def test_numeric_dataframes_come_back_with_their_dtypes():
    from skflow import FlowMixture

    numeric = _table()[["value", "count"]]  # float64 and int64: a numeric table, not a mixed one
    for model in (MAFDensity(n_transforms=2, **FAST), FlowMixture(MADEDensity(**FAST), n_estimators=2)):
        drawn = model.fit(numeric).sample(4, random_state=0)
        assert list(drawn.columns) == ["value", "count"] and drawn.dtypes.equals(numeric.dtypes)


def test_one_context_row_with_strings_is_used_for_every_draw():
    df = _table()
    context = df[["colour", "value"]]
    model = MAFDensity(n_transforms=2, **FAST).fit(df[["count"]].astype(float), context=context)
    expected = model.sample(3, random_state=0, context=context.iloc[[0, 0, 0]])
    for one in (context.iloc[0], context.iloc[[0]]):  # a Series, and a one-row DataFrame
        np.testing.assert_array_equal(model.sample(3, random_state=0, context=one), expected)
    with pytest.raises(ValueError, match="context has 2"):
        model.sample(3, context=context.iloc[:2])
