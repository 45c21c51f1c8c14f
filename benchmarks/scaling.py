"""Default fit time and held-out log-likelihood against the number of rows (10k, 100k, 1M).

ADBench shuttle, dequantized; 9,820 test rows, training sets subsampled (10k) or replicated (100k,
1M) from the other rows. Contenders: ``MAFDensity()``, the same with a normal base, zuko's MAF in the
hand loop with the default's resolved settings, and the small-data recipe under a ``--budget``.
Protocol and results: ``results/scaling.md``.

    OMP_NUM_THREADS=1 python -m benchmarks.scaling
"""

from functools import partial

import numpy as np

from benchmarks.harness import data, report, runner
from benchmarks.harness.peers import ZukoFlow
from skflow import MAFDensity
from skflow.training import TimeLimit

CONTENDERS = ("skflow default", "skflow base=normal", "zuko MAF + loop", "skflow fixed recipe")
FIXED = {"batch_size": 64, "lr": 1e-3, "max_epochs": 300, "patience": 20}


def shuttle_rows(n, seed=0, max_rows=None):
    """``(X_train, X_test)``: ``n`` dequantized training rows and the dequantized test rows."""
    X = data.subsample(data.adbench("shuttle")[0], max_rows)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    n_test = round(0.2 * len(X))
    test, pool = X[order[:n_test]], X[order[n_test:]]
    if n <= len(pool):
        train = pool[rng.choice(len(pool), n, replace=False)]
    else:
        train = pool[np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n]]
    noise = np.random.default_rng(seed + 1)
    return train + noise.uniform(-0.5, 0.5, train.shape), test + noise.uniform(-0.5, 0.5, test.shape)


def run(name, n, args, default_settings, seed=0):
    X_train, X_test = shuttle_rows(n, seed, args.max_rows)
    budget = TimeLimit(args.budget)
    make = {
        "skflow default": lambda: MAFDensity(random_state=seed),
        "skflow base=normal": lambda: MAFDensity(base="normal", random_state=seed),
        "zuko MAF + loop": lambda: ZukoFlow(random_state=seed, **default_settings),
        "skflow fixed recipe": lambda: MAFDensity(**FIXED, callbacks=[budget], random_state=seed),
    }[name]
    timer, model = runner.timed(runner.shorten(make(), args.epochs).fit, X_train)
    log_density = model.score_samples(X_test)
    settings = getattr(model, "training_settings_", default_settings)
    return {"fit_s": timer.wall, "held_out": float(np.mean(log_density)),
            "held_out_median": float(np.median(log_density)), "held_out_min": float(np.min(log_density)),
            "epochs": int(model.n_iter_), "settings": settings,
            "stopped_by_budget": budget.stopped_ if name == "skflow fixed recipe" else None}


def main(argv=None):
    p = runner.parser(__doc__, cache=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    p.add_argument("--budget", type=float, default=900.0, help="seconds for the fixed recipe")
    args = runner.parse(p, argv, __name__, tiny={"sizes": [200], "budget": 1.0, "max_rows": 400})
    cache = runner.Cache(args.cache, ("contender", "n"), args.report_only)
    for n in args.sizes:
        for name in args.contenders:  # the default runs first: the others read its resolved settings
            default = cache.run(partial(run, "skflow default", n, args, None), contender="skflow default",
                                n=n)
            fixed = name == "skflow fixed recipe" and default and default["settings"] == FIXED
            if name != "skflow default" and default and not fixed:  # no fixed recipe where it is the default
                cache.run(partial(run, name, n, args, default["settings"]), contender=name, n=n)
    rows, order = [], lambda r: (r["n"], CONTENDERS.index(r["contender"]))
    for r in sorted(cache.select(contender=args.contenders), key=order):
        s, n, budget = r["settings"], r["n"], " (time budget)" if r.get("stopped_by_budget") else ""
        rows.append([f"{n:,}", r["contender"], s["batch_size"], f"{s['lr']:g}", s["max_epochs"],
                     s["patience"], f"{r['epochs']}{budget}", f"{r['fit_s']:.0f}",
                     f"{1000 * r['fit_s'] / n:.2f}", f"{r['held_out']:.3f}", f"{r['held_out_median']:.3f}",
                     f"{r['held_out_min']:.4g}"])
    report.publish(args, "Scaling: default fit time and held-out log-likelihood against n", __doc__, [
        *report.table(["n", "contender", "batch", "lr", "max epochs", "patience", "epochs run", "fit (s)",
                       "s per 1k rows", "held-out mean log-lik. (nats)", "median", "worst row"], rows)])


if __name__ == "__main__":
    runner.cli(main)
