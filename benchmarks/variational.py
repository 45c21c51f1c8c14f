"""Reverse-KL fitting: log-normalizer error and ELBO per flow, on targets with known normalizers.

Targets: correlated Gaussians (closed-form log Z) and Rezende and Mohamed's
(2015) test energies U1..U4 (log Z by quadrature on a fine grid).
Methods: skflow's VariationalDensity with each flow, a mean-field Gaussian and
zuko's neural spline flow (NSF) fitted by the same reverse KL in a plain loop.

U2, U3 and U4 as published are not normalisable (they do not decay along z1);
here they are multiplied by exp(-(z1 / 4.5)^8), which leaves the plotted box
[-4, 4]^2 almost unchanged and makes log Z finite.

Run:  python benchmarks/variational.py            (about 6 min of CPU on one core)
      python benchmarks/variational.py --quick    (a smoke run)
"""

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skflow.variational import VariationalDensity

RESULTS = Path(__file__).resolve().parent / "results"
N_IS = 20000  # importance samples per log Z estimate


# ------------------------------------------------------------------ targets
def _gaussian(mean, cov):
    mean, cov = mean.double(), cov.double()
    cov_inv = torch.linalg.inv(cov)

    def log_prob(x):
        r = x - mean
        return -0.5 * ((r @ cov_inv) * r).sum(dim=1)

    return log_prob, 0.5 * float(torch.logdet(2 * math.pi * cov))


def _random_covariance(n_features, seed):
    """Random rotation of variances log-uniform in [0.1, 10] (condition number 100)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_features, n_features, generator=gen, dtype=torch.float64))
    variances = torch.logspace(-1, 1, n_features, dtype=torch.float64)
    return (q * variances) @ q.T


def _w1(z):
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _envelope(z):
    return (z[:, 0] / 4.5) ** 8


def _logaddexp(a, b):
    return torch.logaddexp(a, b)


def u1(z):
    r = z.norm(dim=1)
    modes = _logaddexp(-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2)
    return -(0.5 * ((r - 2) / 0.4) ** 2 - modes)


def u2(z):
    return -(0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2) - _envelope(z)


def u3(z):
    w2 = 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)
    d = z[:, 1] - _w1(z)
    return _logaddexp(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + w2) / 0.35) ** 2) - _envelope(z)


def u4(z):
    w3 = 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)
    d = z[:, 1] - _w1(z)
    return _logaddexp(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + w3) / 0.35) ** 2) - _envelope(z)


def _quadrature_log_z(log_prob, lo=-9.0, hi=9.0, n=1801):
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    values = log_prob(torch.stack([g1.ravel(), g2.ravel()], dim=1)).reshape(n, n)
    top = values.max()
    return float(top + torch.log(torch.trapezoid(torch.trapezoid(torch.exp(values - top), t, dim=1), t)))


def make_targets():
    gauss2, log_z2 = _gaussian(torch.tensor([1.0, -1.0]), torch.tensor([[4.0, 0.9], [0.9, 0.25]]))
    cov8 = _random_covariance(8, seed=0)
    gauss8, log_z8 = _gaussian(torch.linspace(-1, 1, 8, dtype=torch.float64), cov8)
    targets = {
        "gauss2 (rho=0.9)": (gauss2, 2, log_z2, "closed form"),
        "gauss8 (cond. 100)": (gauss8, 8, log_z8, "closed form"),
    }
    for name, fn in [("U1", u1), ("U2", u2), ("U3", u3), ("U4", u4)]:
        targets[name] = (fn, 2, _quadrature_log_z(fn), "quadrature")
    return targets


def _as_float32(fn):
    """Targets are written in float64 constants; evaluate them on float32 flows."""

    def log_prob(x):
        return fn(x.double()).to(x.dtype)

    return log_prob


# ------------------------------------------------------------------ methods
SKFLOW_FLOWS = {
    "planar (16)": {"flow": "planar", "n_transforms": 16},
    "radial (16)": {"flow": "radial", "n_transforms": 16},
    "iaf (5)": {"flow": "iaf", "n_transforms": 5},
    "maf (5)": {"flow": "maf", "n_transforms": 5},
    "realnvp (6)": {"flow": "realnvp", "n_transforms": 6},
}


class MeanField(torch.nn.Module):
    """Diagonal Gaussian q, the classical variational baseline."""

    def __init__(self, n_features):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(n_features))
        self.log_scale = torch.nn.Parameter(torch.zeros(n_features))

    def rsample_and_log_prob(self, n):
        eps = torch.randn(n, len(self.loc))
        log_q = (-0.5 * eps**2 - 0.5 * math.log(2 * math.pi)).sum(1) - self.log_scale.sum()
        return self.loc + torch.exp(self.log_scale) * eps, log_q


class ZukoNSF(torch.nn.Module):
    """zuko's neural spline flow (3 autoregressive spline transforms)."""

    def __init__(self, n_features):
        super().__init__()
        import zuko

        self.flow = zuko.flows.NSF(features=n_features, transforms=3, hidden_features=(64, 64))

    def rsample_and_log_prob(self, n):
        return self.flow().rsample_and_log_prob((n,))


def _fit_plain(module, target, steps, lr, batch_size=256):
    """Fixed-length Adam loop on the negative ELBO (the peers' trainer)."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        x, log_q = module.rsample_and_log_prob(batch_size)
        loss = -(target(x) - log_q).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        optimizer.step()
    return module


@torch.no_grad()
def _log_weights_plain(module, target, n):
    chunks, samples = [], []
    for start in range(0, n, 8192):
        x, log_q = module.rsample_and_log_prob(min(8192, n - start))
        chunks.append((target(x) - log_q).double().numpy())
        samples.append(x.double().numpy())
    return np.concatenate(samples), np.concatenate(chunks)


def _summaries(log_w):
    n = len(log_w)
    lse = np.logaddexp.reduce(log_w)
    return {
        "log_z": float(lse - math.log(n)),
        "elbo": float(log_w.mean()),
        "ess": float(np.exp(2 * lse - np.logaddexp.reduce(2 * log_w)) / n),
    }


def run_method(method, target, n_features, max_steps, lr):
    torch.manual_seed(0)
    start = time.perf_counter()
    if method in SKFLOW_FLOWS:
        vd = VariationalDensity(
            target,
            n_features,
            max_steps=max_steps,
            lr=lr,
            patience=150,
            device="cpu",
            random_state=0,
            **SKFLOW_FLOWS[method],
        ).fit()
        fit_time, steps = time.perf_counter() - start, vd.n_iter_
        samples, log_w = vd._log_weights(N_IS, seed=1, return_samples=True)
    else:
        module = {"mean-field Gaussian": MeanField, "zuko NSF (3)": ZukoNSF}[method](n_features)
        _fit_plain(module, target, max_steps, lr)
        fit_time, steps = time.perf_counter() - start, max_steps
        samples, log_w = _log_weights_plain(module, target, N_IS)
    return {**_summaries(log_w), "time": fit_time, "steps": steps}, samples


# ------------------------------------------------------------------ output
def plot(results_samples, targets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, t in targets.items() if t[1] == 2]
    methods = list(next(iter(results_samples.values())).keys())
    fig, axes = plt.subplots(
        len(names), len(methods) + 1, figsize=(2.0 * (len(methods) + 1), 2.0 * len(names))
    )
    edges = np.linspace(-4.5, 4.5, 151)
    t = torch.tensor((edges[1:] + edges[:-1]) / 2, dtype=torch.float64)
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    for i, name in enumerate(names):
        fn = targets[name][0]
        density = torch.exp(fn(torch.stack([g1.ravel(), g2.ravel()], 1))).reshape(g1.shape).numpy()
        axes[i, 0].imshow(density.T, origin="lower", extent=(-4.5, 4.5, -4.5, 4.5), cmap="viridis")
        axes[i, 0].set_ylabel(name)
        for j, method in enumerate(methods):
            s = results_samples[name][method]
            hist, _, _ = np.histogram2d(s[:, 0], s[:, 1], bins=[edges, edges])
            axes[i, j + 1].imshow(hist.T, origin="lower", extent=(-4.5, 4.5, -4.5, 4.5), cmap="viridis")
    for j, title in enumerate(["target exp(log_prob)", *methods]):
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--quick", action="store_true", help="100 steps, two targets")
    parser.add_argument("--targets", help="comma-separated subset, e.g. U3,U4 (results get a suffix)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    targets = make_targets()
    if args.quick:
        args.max_steps = 100
        targets = {k: targets[k] for k in ["gauss2 (rho=0.9)", "U1"]}
    if args.targets:
        targets = {k: targets[k] for k in args.targets.split(",")}
    methods = ["mean-field Gaussian", *SKFLOW_FLOWS, "zuko NSF (3)"]
    rows, samples = [], {}
    for name, (fn, d, log_z, how) in targets.items():
        samples[name] = {}
        for method in methods:
            res, s = run_method(method, _as_float32(fn), d, args.max_steps, args.lr)
            samples[name][method] = s
            rows.append((name, d, log_z, how, method, res))
            print(
                f"{name:20s} {method:20s} logZ err {res['log_z'] - log_z:+.4f} "
                f"ELBO-logZ {res['elbo'] - log_z:+.4f} ESS {res['ess']:.3f} {res['time']:.0f}s",
                flush=True,
            )
    suffix = "_quick" if args.quick else ""
    if args.targets:
        suffix += "_" + "_".join(targets).split(" ")[0].lower()
    RESULTS.mkdir(exist_ok=True)
    plot(samples, targets, RESULTS / f"variational_densities{suffix}.png")
    lines = [
        "# Reverse-KL fitting: log-normalizer error and ELBO",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/variational.py {' '.join(sys.argv[1:])}` "
        f"(max_steps={args.max_steps}, lr={args.lr}, batch 256, seed 0, CPU, one thread).",
        "",
        f"log Z: importance-sampling estimate with {N_IS} draws from the fitted q; error = estimate - truth. "
        "ELBO gap = ELBO - log Z = -KL(q || p) (0 is perfect). ESS: effective sample size of the importance "
        "weights / number of draws (1 is perfect). skflow flows stop early on a smoothed ELBO (patience 150, "
        "one learning-rate drop); the peers (mean-field Gaussian, zuko NSF) run a plain Adam loop for "
        "max_steps. U2-U4 carry the envelope exp(-(z1/4.5)^8) (see the script).",
        "",
        "| target | d | true log Z | method | log Z error | ELBO gap | ESS | steps | fit time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d, log_z, how, method, res in rows:
        lines.append(
            f"| {name} | {d} | {log_z:.4f} ({how}) | {method} | {res['log_z'] - log_z:+.4f} | "
            f"{res['elbo'] - log_z:+.4f} | {res['ess']:.3f} | {res['steps']} | {res['time']:.0f} |"
        )
    lines += ["", f"Density plots (histograms of {N_IS} samples): `variational_densities{suffix}.png`.", ""]
    (RESULTS / f"variational{suffix}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
