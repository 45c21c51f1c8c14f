"""Data and estimator shared by the data-parallel test and its worker script."""

from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

from skflow import MAFDensity


def data():
    X = load_diabetes().data
    return train_test_split(X, test_size=0.25, random_state=0)


def estimator(**params):
    defaults = dict(n_transforms=2, hidden_features=(32, 32), max_epochs=15, batch_size=32, random_state=0)
    return MAFDensity(**{**defaults, **params})
