"""scikit-learn's estimator checks for every public estimator, with no tag declared beyond the defaults.

Checks an estimator cannot pass are listed with the reason by ``_expected_failures``
(run as strict xfails, so a check that starts passing is reported):

- The image densities (``RealNVPImageDensity``, ``GlowDensity``) take flat rows only
  with a fixed ``image_shape``, so 2-D X must have ``C * H * W`` columns; the checks
  pass X with 1 to 10 columns. No tag can declare "a fixed number of features".
- ``VariationalDensity`` is fitted to a log-density callable, not to data: ``fit``
  ignores X (so it does not validate it) and ``n_features`` is a constructor
  parameter, so X of another width cannot be scored.
"""

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow import (
    FlowImputer,
    FlowMixture,
    FlowOutlierDetector,
    GlowDensity,
    IAFDensity,
    MADEDensity,
    MAFDensity,
    NSFDensity,
    RealNVPDensity,
    RealNVPImageDensity,
    TarFlowDensity,
    VariationalDensity,
)

TINY = dict(max_epochs=2, hidden_features=(4,), batch_size=64)
STACKED = dict(TINY, n_transforms=1)
IMAGE = dict(image_shape=(1, 4, 4), n_levels=1, hidden_channels=4, n_blocks=1, max_epochs=2)


class StandardNormalLogProb:
    """Unnormalised log-density of N(0, I): a module-level callable, so the estimator pickles,
    with a stable repr, so the test ids do not hold a memory address."""

    def __call__(self, x):
        return -0.5 * (x**2).sum(dim=1)

    def __repr__(self):
        return "StandardNormalLogProb()"


ESTIMATORS = [
    MADEDensity(**TINY),
    MADEDensity(n_components=2, **TINY),
    MAFDensity(n_transforms=2, batch_norm=True, **TINY),
    IAFDensity(**STACKED),
    NSFDensity(**STACKED, spline_bins=4),
    RealNVPDensity(n_transforms=2, base="mixture", n_components=2, **TINY),
    RealNVPDensity(n_transforms=2, coupling_map="spline", **TINY),
    RealNVPImageDensity(**IMAGE),
    GlowDensity(n_steps=1, **IMAGE),
    TarFlowDensity(n_blocks=1, n_layers=1, channels=4, n_heads=2, max_epochs=2),
    FlowOutlierDetector(MAFDensity(**STACKED, validation_fraction=0.0)),
    FlowMixture(MAFDensity(**STACKED), n_estimators=2),
    FlowImputer(MAFDensity(**STACKED), n_draws=16),
    VariationalDensity(
        StandardNormalLogProb(),
        2,
        flow="realnvp",
        n_transforms=1,
        hidden_features=(4,),
        batch_size=16,
        max_steps=2,
    ),
]

_WIDTH = "2-D X must have C*H*W = 16 columns (image_shape=(1, 4, 4)); the check passes X of another width"
_IMAGE_FAILURES = {
    name: _WIDTH
    for name in [
        "check_fit_score_takes_y",
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_estimators_dtypes",
        "check_dtype_object",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
        "check_fit2d_predict1d",
        "check_sample_weights_pandas_series",
        "check_sample_weights_not_an_array",
        "check_sample_weights_list",
        "check_all_zero_sample_weights_error",
        "check_sample_weights_shape",
        "check_sample_weights_not_overwritten",
        "check_sample_weight_equivalence_on_dense_data",
    ]
}
_IMAGE_FAILURES["check_positive_only_tag_during_fit"] = (
    _WIDTH + " (the ValueError is about the width, not negative values; positive_only would be a false tag)"
)
_IMAGE_FAILURES["check_fit2d_1feature"] = (
    "X with 1 column is rejected because image_shape has 16 pixels, not with sklearn's '1 feature(s)' message"
)

_NO_DATA = "fit ignores X (the flow is fitted to log_prob by reverse KL), so X is never validated"
_FIXED_WIDTH = "n_features is a constructor parameter (2); the check scores X of another width"
_VARIATIONAL_FAILURES = {
    "check_fit_score_takes_y": _FIXED_WIDTH,
    "check_pipeline_consistency": _FIXED_WIDTH,
    "check_methods_sample_order_invariance": _FIXED_WIDTH,
    "check_methods_subset_invariance": _FIXED_WIDTH,
    "check_n_features_in_after_fitting": _NO_DATA + " and n_features_in_ is n_features, not X's width",
    "check_complex_data": _NO_DATA,
    "check_dtype_object": _NO_DATA,
    "check_estimators_empty_data_messages": _NO_DATA,
    "check_estimators_nan_inf": _NO_DATA,
    "check_estimator_sparse_tag": _NO_DATA,
    "check_fit1d": _NO_DATA,
}


def _expected_failures(estimator):
    if isinstance(estimator, (RealNVPImageDensity, GlowDensity)):
        return _IMAGE_FAILURES
    if isinstance(estimator, VariationalDensity):
        return _VARIATIONAL_FAILURES
    if isinstance(estimator, FlowOutlierDetector):
        return {
            "check_sample_weight_equivalence_on_dense_data": (
                "the density trains in float32: weighted and repeated-row fits agree to about 1e-8 nats, "
                "above the check's rtol=1e-7 on decision values near 0"
            )
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures, xfail_strict=True)
def test_sklearn_compatible(estimator, check):
    check(estimator)


#: Public estimators whose checks live elsewhere.
CHECKED_ELSEWHERE = {
    # p(y | x) regressor added with skflow.estimators.conditional; its tests own its estimator checks
    "FlowRegressor",
}


def test_every_public_estimator_is_checked():
    import skflow

    public = {
        name for name in skflow.__all__ if isinstance(getattr(skflow, name), type) and name != "FlowDensity"
    }
    assert public - CHECKED_ELSEWHERE == {type(e).__name__ for e in ESTIMATORS}
    assert {e.coupling_map for e in ESTIMATORS if isinstance(e, RealNVPDensity)} == {"affine", "spline"}


def test_scores_do_not_depend_on_the_batch():
    """check_methods_subset_invariance at one more seed: scores of rows alone and in a batch agree to 1e-7.

    With float32 inference the CPU kernels for a batch of 20 rows and for one row round
    differently, and a score can move by one float32 ulp (4.8e-7 at |log p| = 3.7): above the
    tolerance of scikit-learn's check (atol=1e-7, rtol=1e-7). The checks above pass at their
    seed by luck of the weights; this seed shows it (a library bug, see the port's report).
    """
    X = 3 * np.random.RandomState(0).uniform(size=(20, 3))
    density = MAFDensity(n_transforms=2, hidden_features=(8,), max_epochs=3, validation_fraction=0.0)
    detector = FlowOutlierDetector(density, random_state=1).fit(X)
    for method in (detector.score_samples, detector.decision_function):
        one_by_one = np.array([method(row[None])[0] for row in X])
        np.testing.assert_allclose(method(X), one_by_one, rtol=1e-7, atol=1e-7)
