"""Reverse-KL fitting: log-normalizer error and ELBO per flow, on targets with known normalizers.

Correlated Gaussians and Rezende and Mohamed's energies U1..U4 (U2-U4 times exp(-(z1 / 4.5)^8), so log
Z is finite); skflow's VariationalDensity with each flow against a mean-field Gaussian and zuko's NSF
fitted by the same reverse KL (``harness.peers.ReverseKL``). Reported: log Z error, ELBO gap and the
effective sample size. Protocol and results: ``results/variational.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.variational --max-steps 800 --lr 1e-2
"""

import math
from functools import partial

import numpy as np
import torch

from benchmarks.harness import peers, report, runner
from skflow import VariationalDensity

SKFLOW_FLOWS = {f"{flow} ({n})": {"flow": flow, "n_transforms": n}
                for flow, n in (("planar", 16), ("radial", 16), ("iaf", 5), ("maf", 5), ("realnvp", 6))}
PEERS = {"mean-field Gaussian": "mean-field", "zuko NSF (3)": "zuko NSF"}


def random_covariance(n_features, seed):
    """Random rotation of variances log-uniform in [0.1, 10] (condition number 100)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n_features, n_features, generator=gen, dtype=torch.float64))
    return (q * torch.logspace(-1, 1, n_features, dtype=torch.float64)) @ q.T


def wave(z):  # z2 - sin(2 pi z1 / 4)
    return z[:, 1] - torch.sin(2 * math.pi * z[:, 0] / 4)


def envelope(z):
    return (z[:, 0] / 4.5) ** 8


def two_waves(z, shift, scale):  # U3 and U4: the wave and a copy shifted by shift, times the envelope
    d = wave(z)
    return torch.logaddexp(-0.5 * (d / scale) ** 2, -0.5 * ((d + shift) / 0.35) ** 2) - envelope(z)


#: Unnormalised log-densities of 2-D points ``z`` (n, 2).
ENERGIES = {
    "U1": lambda z: -(0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2 - torch.logaddexp(
        -0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2)),
    "U2": lambda z: -(0.5 * (wave(z) / 0.4) ** 2) - envelope(z),
    "U3": lambda z: two_waves(z, 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2), 0.35),
    "U4": lambda z: two_waves(z, 3 * torch.sigmoid((z[:, 0] - 1) / 0.3), 0.4),
}
#: Gaussian targets: (mean, covariance).
GAUSSIANS = {"gauss2 (rho=0.9)": lambda: (torch.tensor([1.0, -1.0]), torch.tensor([[4.0, 0.9], [0.9, 0.25]])),
             "gauss8 (cond. 100)": lambda: (torch.linspace(-1, 1, 8, dtype=torch.float64),
                                                    random_covariance(8, seed=0))}
TARGETS = (*GAUSSIANS, *ENERGIES)


def quadrature_log_z(log_prob, lo=-9.0, hi=9.0, n=1801):
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    values = log_prob(torch.stack([g1.ravel(), g2.ravel()], dim=1)).reshape(n, n)
    top = values.max()
    return float(top + torch.log(torch.trapezoid(torch.trapezoid(torch.exp(values - top), t, dim=1), t)))


def target(name):
    """``(log_prob, log Z, d, how log Z was found)`` of a target."""
    if name in ENERGIES:
        return ENERGIES[name], quadrature_log_z(ENERGIES[name]), 2, "quadrature"
    mean, cov = (a.double() for a in GAUSSIANS[name]())
    cov_inv = torch.linalg.inv(cov)
    log_prob = lambda x: -0.5 * (((x - mean) @ cov_inv) * (x - mean)).sum(dim=1)
    return log_prob, 0.5 * float(torch.logdet(2 * math.pi * cov)), len(mean), "closed form"


def as_float32(fn, x):  # a target (float64 constants) on a float32 flow's draws
    return fn(x.double()).to(x.dtype)


def run_method(method, log_prob, n_features, args):
    """Fit q to ``exp(log_prob)``: log Z estimate, ELBO, ESS, steps and seconds; and draws from q."""
    torch.manual_seed(0)
    if method in SKFLOW_FLOWS:
        model = VariationalDensity(log_prob, n_features, max_steps=args.max_steps, lr=args.lr, patience=150,
                                   device="cpu", random_state=0, **SKFLOW_FLOWS[method])
        timer, _ = runner.timed(model.fit)
        log_z, ess = model.estimate_log_normalizer(args.draws, random_state=1, return_ess=True)
        samples, elbo = model.sample(args.draws, random_state=1), model.elbo_
    else:
        model = peers.ReverseKL(PEERS[method], max_steps=args.max_steps, lr=args.lr)
        timer, _ = runner.timed(model.fit, log_prob, n_features)
        samples, log_w = model.log_weights(args.draws)
        lse = np.logaddexp.reduce(log_w)
        log_z, elbo = lse - math.log(len(log_w)), log_w.mean()
        ess = np.exp(2 * lse - np.logaddexp.reduce(2 * log_w)) / len(log_w)
    return {"log_z": float(log_z), "elbo": float(elbo), "ess": float(ess), "time": timer.wall,
            "steps": model.n_iter_}, samples


def plot(samples, targets, path):
    """Per 2-D target: its density and a 2-D histogram of each method's draws, on [-4.5, 4.5]^2."""
    plt, methods = report.pyplot(), list(next(iter(samples.values())))
    fig, axes = plt.subplots(len(targets), len(methods) + 1, squeeze=False,
                             figsize=(2.0 * (len(methods) + 1), 2.0 * len(targets)))
    edges = np.linspace(-4.5, 4.5, 151)
    t = torch.tensor((edges[1:] + edges[:-1]) / 2, dtype=torch.float64)
    g1, g2 = torch.meshgrid(t, t, indexing="ij")
    box = {"origin": "lower", "extent": (-4.5, 4.5, -4.5, 4.5), "cmap": "viridis"}
    for i, (name, fn) in enumerate(targets.items()):
        density = torch.exp(fn(torch.stack([g1.ravel(), g2.ravel()], 1))).reshape(g1.shape)
        axes[i, 0].imshow(density.numpy().T, **box)
        axes[i, 0].set_ylabel(name)
        for ax, method in zip(axes[i, 1:], methods):
            s = samples[name][method]
            ax.imshow(np.histogram2d(s[:, 0], s[:, 1], bins=[edges, edges])[0].T, **box)
    for ax, title in zip(axes[0], ["target exp(log_prob)", *methods]):
        ax.set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set(xticks=[], yticks=[])
    report.save(fig, path, dpi=80)


def main(argv=None):
    p = runner.parser(__doc__)
    p.add_argument("--max-steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    p.add_argument("--methods", nargs="+", default=["mean-field Gaussian", *SKFLOW_FLOWS, "zuko NSF (3)"],
                   choices=[*PEERS, *SKFLOW_FLOWS])
    p.add_argument("--draws", type=int, default=20_000, help="importance samples per log Z estimate")
    tiny = {"max_steps": 20, "targets": ["gauss2 (rho=0.9)", "U1"], "draws": 500,
            "methods": ["mean-field Gaussian", "planar (16)", "maf (5)", "zuko NSF (3)"]}
    args = runner.parse(p, argv, __name__, tiny=tiny)
    rows, samples, shown = [], {}, {}
    for name in args.targets:
        fn, log_z, d, how = target(name)
        samples[name] = {}
        for method in args.methods:
            try:
                res, samples[name][method] = run_method(method, partial(as_float32, fn), d, args)
            except runner.Unavailable as error:
                print(f"skipped {method}: {error}", flush=True)
                continue
            rows.append(report.show([name, d, f"{log_z:.4f} ({how})", method, f"{res['log_z'] - log_z:+.4f}",
                                     f"{res['elbo'] - log_z:+.4f}", f"{res['ess']:.3f}", res["steps"],
                                     f"{res['time']:.0f}"]))
        if d == 2:
            shown[name] = fn
    figure = f"variational_densities{args.name.removeprefix('variational')}.png"
    plot({name: samples[name] for name in shown}, shown, args.out / figure)
    report.publish(args, "Reverse-KL fitting: log-normalizer error and ELBO", __doc__, [
        (f"max_steps={args.max_steps}, lr={args.lr}, batch 256, seed 0, CPU, one thread; log Z estimated "
         f"with {args.draws} draws from the fitted q (error = estimate - truth)."), "",
        *report.table(["target", "d", "true log Z", "method", "log Z error", "ELBO gap", "ESS", "steps",
                       "fit time (s)"], rows), "",
        f"Density plots (histograms of {args.draws} samples): `{figure}`."])


if __name__ == "__main__":
    runner.cli(main)
