"""scikit-learn's estimator checks, with no tag declared beyond the defaults."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skflow import MADEDensity, MAFDensity, RealNVPDensity

FAST = dict(max_epochs=3, hidden_features=(8,), batch_size=64)


@parametrize_with_checks(
    [
        MADEDensity(**FAST),
        MADEDensity(n_components=2, **FAST),
        MAFDensity(n_transforms=2, batch_norm=True, **FAST),
        RealNVPDensity(n_transforms=2, base="mixture", n_components=2, **FAST),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
