"""The flow module: a transform from data to latent space and a base density."""

from torch import nn

__all__ = ["Flow"]


class Flow(nn.Module):
    """``log p(x) = log p_base(T(x)) + log|det dT/dx|``.

    Parameters
    ----------
    transform : skflow.transforms.Transform
        Maps data to the base space.
    base : torch.nn.Module
        Has ``log_prob(z)`` and ``sample(n_samples, generator)``.
    """

    def __init__(self, transform, base):
        super().__init__()
        self.transform = transform
        self.base = base

    def forward(self, x):
        """Log-density of each row of ``x``; shape ``(n_samples,)``."""
        return self.log_prob(x)

    def log_prob(self, x):
        z, ladj = self.transform(x)
        return self.base.log_prob(z) + ladj

    def sample(self, n_samples, generator=None):
        """Draw ``n_samples`` from the model (base sample, then inverse)."""
        return self.rsample_and_log_prob(n_samples, generator)[0]

    def rsample_and_log_prob(self, n_samples, generator=None):
        """Reparameterised samples and their log-densities, in one pass."""
        z = self.base.sample(n_samples, generator)
        log_base = self.base.log_prob(z)
        x, ladj = self.transform.inverse(z)
        return x, log_base - ladj
