"""Image densities with skflow: bits/dim, samples and one-class outliers on digits.

scikit-learn's digits are 8x8 images with 17 grey levels, so ``n_bins=17``:
the flow models dequantized pixels and ``score_samples`` is (a lower bound
of) the log-probability of each discrete image, in nats. ``bits_per_dim``
turns it into the usual unit.

Run (about two minutes of one CPU core)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python examples/images.py
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skflow.data import uniform_dequantized_score_samples
from skflow import bits_per_dim
from skflow import GlowDensity

digits = load_digits()
X = digits.images.astype(int)  # (1797, 8, 8), values 0..16; flat (n, 64) + image_shape also works
X_train, X_test, y_train, y_test = train_test_split(X, digits.target, test_size=0.2, random_state=0)

# 1. Density: Glow on the images versus a Gaussian mixture on dequantized pixels.
glow = GlowDensity(n_bins=17, n_levels=3, n_steps=2, hidden_channels=16, max_epochs=20, random_state=0)
glow.fit(X_train)
print(f"Glow:             {bits_per_dim(glow, X_test):.3f} bits/dim on held-out digits")

rng = np.random.default_rng(0)
flat_train = X_train.reshape(len(X_train), -1)
gmm = GaussianMixture(5, reg_covar=1e-3, random_state=0).fit(flat_train + rng.random(flat_train.shape))


class DequantizedGMM:
    """The same bookkeeping for the mixture: log P(x) >= log mean_k p(x + u_k)."""

    def score_samples(self, X):
        return uniform_dequantized_score_samples(
            gmm.score_samples, X.reshape(len(X), -1), n_bins=17, n_draws=4
        )


print(f"Gaussian mixture: {bits_per_dim(DequantizedGMM(), X_test):.3f} bits/dim")

# 2. Samples come back as integer images in the layout fit received.
samples = glow.sample(16, random_state=0)  # (16, 8, 8), int64 in [0, 17)
fig, axes = plt.subplots(2, 8, figsize=(8, 2))
for ax, image in zip(axes.ravel(), samples):
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=16)
    ax.axis("off")
fig.savefig("glow_digit_samples.png", dpi=100)
print("Saved 16 samples to glow_digit_samples.png")

# 3. One-class outlier detection: fit on zeros, score every test digit.
zeros = X_train[y_train == 0]
detector = GlowDensity(n_bins=17, n_levels=3, n_steps=2, hidden_channels=16, max_epochs=40, random_state=0)
detector.fit(zeros)
is_outlier = y_test != 0
auc_flow = roc_auc_score(is_outlier, -detector.score_samples(X_test))
forest = IsolationForest(random_state=0).fit(zeros.reshape(len(zeros), -1))
auc_forest = roc_auc_score(is_outlier, -forest.score_samples(X_test.reshape(len(X_test), -1)))
print(f"ROC AUC, 'not a zero': Glow {auc_flow:.3f}, IsolationForest {auc_forest:.3f}")
