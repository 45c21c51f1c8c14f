from pathlib import Path

import pytest
import torch

# Small models gain nothing from intra-op threads, and on a shared 2-core machine two threads per
# process slow the suite down many times over.
torch.set_num_threads(1)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def adbench():
    """Load an ADBench set by name, or skip when ../shared/data is absent."""
    import numpy as np

    def load(name):
        path = DATA_DIR / "adbench" / f"{name}.npz"
        if not path.exists():
            pytest.skip(f"{path} not found: the shared data folder sits beside the checkout")
        data = np.load(path)
        return data["X"], data["y"]

    return load
