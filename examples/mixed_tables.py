"""A density over a real table with strings, floats and integers: the Palmer penguins.

Every skflow tabular density takes a DataFrame with categorical (string,
category, boolean) columns as it is: log P(species, island, sex) is modelled
exactly by an autoregressive categorical network, the measurements by a flow
conditioned on those cells. The script fits one, scores rows, samples new ones
with the training dtypes, and flags implausible penguins. Needs
../shared/data/tables/penguins.csv beside the checkout; runs in about a minute.
"""

from pathlib import Path

import pandas as pd

from skflow import FlowOutlierDetector, MAFDensity

path = Path(__file__).resolve().parents[2] / "shared" / "data" / "tables" / "penguins.csv"
if not path.exists():
    raise SystemExit(f"{path} not found: the shared data folder sits beside the checkout")
penguins = pd.read_csv(path).dropna().reset_index(drop=True)
print(penguins.dtypes.to_string(), "\n")

maf = MAFDensity(random_state=0).fit(penguins)
print("log-density of the first rows (nats):", maf.score_samples(penguins.head(3)).round(2))
print("\nthree sampled penguins:\n", maf.sample(3, random_state=0))

odd = penguins.head(3).copy()
odd["island"] = ["Biscoe", "Atlantis", "Dream"]  # an island never seen in training
odd.loc[2, "body_mass_g"] = 12000.0  # an impossible weight
detector = FlowOutlierDetector(random_state=0).fit(penguins)
print("\ninlier (+1) or outlier (-1):", detector.predict(odd))
