"""Data loaders and the zuko peer shared by the tabular benchmarks.

The ADBench sets are read from ``../shared/data/adbench`` beside the
repository root; their outlier labels are ignored (every row is used).
scikit-learn's breast_cancer ships with scikit-learn.

The zuko peer is what a user writes by hand: zuko's MAF with skflow's default
architecture, standardised inputs, AdamW with gradient clipping, shuffled
mini-batches and (optionally) early stopping on a validation split with the
best weights restored, i.e. the same recipe as skflow's training loop.
"""

import copy
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

__all__ = ["DATA_DIR", "SETS", "load_set", "split_set", "ZukoMAF"]

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_ADBENCH = {
    "magic": "22_magic.gamma",
    "pendigits": "28_pendigits",
    "vowels": "40_vowels",
    "cardio": "6_cardio",
}

#: Benchmark sets in report order.
SETS = ("magic", "pendigits", "vowels", "cardio", "breast_cancer")

#: Fraction of rows held out for scoring.
TEST_FRACTION = 0.2


def load_set(name):
    """All rows of one set as a float64 array (labels dropped).

    Raises FileNotFoundError with a clear message when an ADBench file is
    absent.
    """
    if name == "breast_cancer":
        return load_breast_cancer().data.astype(np.float64)
    path = DATA_DIR / "adbench" / f"{_ADBENCH[name]}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the benchmark needs ../shared/data beside the repo root.")
    return np.load(path)["X"].astype(np.float64)


def split_set(name, seed):
    """``(X_train, X_test)``: a seeded random split, ``TEST_FRACTION`` held out."""
    return train_test_split(load_set(name), test_size=TEST_FRACTION, random_state=seed)



def fit_with_early_stopping(flow, epoch_losses, valid_nll, *, max_epochs, lr, weight_decay, patience):
    """The peers' hand-written loop: AdamW on the batch losses, gradient norm clipped to 10, early stopping.

    ``epoch_losses()`` yields one epoch's batch losses (minus mean log-likelihoods); ``valid_nll()``
    (or None: no early stopping) gives the validation loss after each epoch. The best weights are
    restored. Returns the number of epochs run.
    """
    optimizer = torch.optim.AdamW(flow.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, waited, n_iter = math.inf, None, 0, 0
    for _ in range(max_epochs):
        flow.train()
        for loss in epoch_losses():
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
            optimizer.step()
        n_iter += 1
        if valid_nll is None:
            continue
        flow.eval()
        nll = valid_nll()
        if nll < best:
            best, best_state, waited = nll, copy.deepcopy(flow.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_state is not None:
        flow.load_state_dict(best_state)
    flow.eval()
    return n_iter

class ZukoMAF:
    """zuko's MAF trained by a hand-written loop, scored in raw units.

    Same recipe as skflow's FlowDensity: per-feature standardisation (its
    log-determinant added back), a seeded validation split, AdamW, gradient
    norm clipped to 10, early stopping with the best weights restored.
    """

    def __init__(self, n_transforms=5, hidden_features=(128, 128), max_epochs=300, batch_size=256,
                 lr=1e-3, weight_decay=1e-5, validation_fraction=0.1, patience=20, random_state=0,
                 flow="MAF", spline_bins=8):
        self.flow = flow
        self.spline_bins = spline_bins
        self.n_transforms = n_transforms
        self.hidden_features = hidden_features
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    def _nll(self, Z):
        with torch.no_grad():
            return -float(torch.cat([self.flow_().log_prob(b) for b in Z.split(8192)]).mean())

    def fit(self, X):
        import zuko

        rng = np.random.default_rng(self.random_state)
        torch.manual_seed(self.random_state)
        self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0)
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        order = torch.as_tensor(rng.permutation(len(Z)))
        n_valid = int(round(self.validation_fraction * len(Z)))
        Z_valid, Z_train = Z[order[:n_valid]], Z[order[n_valid:]]
        if self.flow == "NSF":  # zuko's NSF: MAF's layers with 8-bin splines on [-5, 5], as skflow's NSFDensity
            self.flow_ = zuko.flows.NSF(X.shape[1], bins=self.spline_bins, transforms=self.n_transforms,
                                        hidden_features=tuple(self.hidden_features))
        else:
            self.flow_ = zuko.flows.MAF(X.shape[1], transforms=self.n_transforms,
                                        hidden_features=tuple(self.hidden_features))
        epoch = lambda: (-self.flow_().log_prob(b).mean() for b in Z_train[torch.randperm(len(Z_train))].split(
            self.batch_size))
        self.n_iter_ = fit_with_early_stopping(
            self.flow_, epoch, (lambda: self._nll(Z_valid)) if n_valid else None, max_epochs=self.max_epochs,
            lr=self.lr, weight_decay=self.weight_decay, patience=self.patience)
        return self

    def score_samples(self, X):
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        with torch.no_grad():
            log_prob = torch.cat([self.flow_().log_prob(b) for b in Z.split(8192)])
        return log_prob.double().numpy() - np.log(self.scale_).sum()

    def sample(self, n_samples, random_state=0):
        torch.manual_seed(random_state)
        with torch.no_grad():
            Z = self.flow_().sample((n_samples,))
        return Z.double().numpy() * self.scale_ + self.mean_
