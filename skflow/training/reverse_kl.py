"""The reverse-KL training loop of :class:`skflow.estimators.variational.VariationalDensity`.

A small, explicit loop rather than skflow's skorch ``FlowNet``: skorch is
built around iterating over a dataset and calling the module on each batch;
reverse-KL fitting has no data, and each step draws its own batch from the
model being trained. Forcing that through skorch would need a dummy dataset
and a module that ignores its input. The loop (Adam, gradient clipping,
early stopping on an exponentially smoothed ELBO with one tenfold
learning-rate drop at the first plateau, restore-and-halve-the-rate on
divergence) is about fifty lines and keeps those mechanisms visible.
"""

import math

import numpy as np
import torch

__all__ = ["fit_reverse_kl", "target_log_prob"]

#: Gradients are clipped to this norm (as in the maximum-likelihood loop).
GRADIENT_CLIP = 10.0

#: Weight of the newest step in the exponentially smoothed ELBO (about 50 steps of memory).
SMOOTHING = 0.02
#: Divergences (non-finite samples or gradients) recovered from before giving up.
MAX_RESTARTS = 5


def target_log_prob(log_prob, x, check_grad=False):
    """Evaluate the user's unnormalized log-density, refusing malformed output."""
    out = log_prob(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"log_prob must return a torch.Tensor of shape (n,), got {type(out).__name__}. "
            "Write it with torch operations so that it can be differentiated."
        )
    if out.shape != (x.shape[0],):
        raise ValueError(
            f"log_prob must map a tensor of shape (n, n_features) to shape (n,); it mapped "
            f"{tuple(x.shape)} to {tuple(out.shape)}."
        )
    bad = ~torch.isfinite(out)
    if bad.any():
        where = x[bad][0].detach().cpu().numpy()
        raise ValueError(
            f"log_prob returned NaN or infinite values at {int(bad.sum())} of {len(out)} points "
            f"drawn from the flow (e.g. at x={np.array2string(where, precision=3)}). The "
            "unnormalized log-density must be finite wherever the flow may put mass; for a "
            "bounded support, fit the flow to an unconstrained reparametrisation."
        )
    if check_grad and not out.requires_grad:
        raise ValueError(
            "log_prob's output does not depend differentiably on its input: write it with "
            "torch operations on the input tensor (no .numpy(), .item() or .detach())."
        )
    return out


def fit_reverse_kl(flow, log_prob, generator, *, batch_size, max_steps, lr, patience, verbose=0):
    """Adam on the negative ELBO; returns the per-step ELBOs.

    The first plateau of the smoothed ELBO (``patience`` steps without a
    new best) restarts from the best weights with a tenth of the learning
    rate; the second ends training. A non-finite sample or gradient also
    restarts from the best weights, with half the rate.
    """
    params = list(flow.parameters())
    restarts, plateaus = 0, 0
    optimizer = torch.optim.Adam(params, lr=lr)
    best_params = [p.detach().clone() for p in params]
    best, smoothed, since_best, history = -math.inf, None, 0, []
    report_every = max(1, max_steps // 20)

    def restart(factor):
        nonlocal optimizer, lr, since_best
        with torch.no_grad():
            for p, saved in zip(params, best_params):
                p.copy_(saved)
        lr, since_best = lr * factor, 0
        optimizer = torch.optim.Adam(params, lr=lr)

    for step in range(max_steps):
        x, log_q = flow.rsample_and_log_prob(batch_size, generator=generator)
        finite = bool(torch.isfinite(x).all() and torch.isfinite(log_q).all())
        if finite:
            elbo = (target_log_prob(log_prob, x, check_grad=step == 0) - log_q).mean()
            optimizer.zero_grad()
            (-elbo).backward()
            finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, GRADIENT_CLIP)))
        if not finite:
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise FloatingPointError(
                    f"Training diverged {restarts} times (non-finite samples or gradients), even "
                    "after halving the learning rate each time. Try a smaller `lr`, fewer "
                    "`n_transforms`, or check that log_prob is smooth where the flow samples."
                )
            restart(0.5)
            continue
        optimizer.step()
        value = float(elbo.detach())
        history.append(value)
        smoothed = value if smoothed is None else smoothed + SMOOTHING * (value - smoothed)
        if smoothed > best:
            best, since_best = smoothed, 0
            with torch.no_grad():
                for p, saved in zip(params, best_params):
                    saved.copy_(p)
        else:
            since_best += 1
        if verbose and (step + 1) % report_every == 0:
            print(f"step {step + 1:6d}  smoothed ELBO {smoothed:.4f}  lr {lr:.2g}")
        if since_best >= patience:
            plateaus += 1
            if plateaus > 1:
                break
            restart(0.1)
    restart(1.0)
    return history
