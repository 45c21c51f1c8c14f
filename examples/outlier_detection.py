"""Flag malignant tumours as outliers of a density fitted to benign ones.

FlowOutlierDetector fits a normalizing flow to "normal" rows and flags rows
the flow finds unlikely. Here the normal rows are benign tumours of
scikit-learn's breast-cancer data; malignant tumours never enter training.
Runs in a few seconds on a CPU.
"""

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score

from skflow import FlowOutlierDetector

X, y = load_breast_cancer(return_X_y=True)  # y: 0 malignant, 1 benign
rng = np.random.RandomState(0)
benign = rng.permutation(np.flatnonzero(y == 1))
train, test = benign[:180], np.concatenate([benign[180:], np.flatnonzero(y == 0)])

# Fit on benign rows only; the default density is a masked autoregressive flow.
detector = FlowOutlierDetector(random_state=0).fit(X[train])

# Higher score = more normal; predict gives +1 (inlier) or -1 (outlier).
scores = detector.score_samples(X[test])
labels = detector.predict(X[test])
is_malignant = y[test] == 0

print(f"ROC AUC (malignant vs held-out benign): {roc_auc_score(is_malignant, -scores):.3f}")
print(
    f"flagged: {np.mean(labels[is_malignant] == -1):.0%} of malignant, "
    f"{np.mean(labels[~is_malignant] == -1):.0%} of held-out benign"
)
