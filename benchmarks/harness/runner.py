"""One runner for every benchmark: the common command line, the result cache and timing.

Finished runs are JSON records cached under ``benchmarks/results/cache/`` (git-ignored), so an
interrupted run resumes and ``--report-only`` rewrites a report without fitting; several
``--cache`` files let runs split over processes be joined.
"""

import argparse
import importlib
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from .data import MissingData

RESULTS = Path(__file__).resolve().parents[1] / "results"
CACHE = RESULTS / "cache"
#: What ``--tiny`` sets on every script (each script adds its own).
TINY = {"seeds": [0], "max_rows": 80, "epochs": 2}


class Unavailable(ImportError):
    """A peer needs an optional package that is not installed; the runner skips it."""


def need(module):
    """Import an optional package of a peer, or raise :class:`Unavailable` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise Unavailable(f"{module} is not installed (pip install 'skflow[bench]'): {error}") from None


def cli(main):
    """Run a script's ``main()``; missing data or a missing reference package ends it with one line."""
    try:
        main()
    except (MissingData, Unavailable) as error:
        sys.exit(f"skipped: {error}")


def parser(doc, *, seeds=None, sets=None, default_sets=None, cache=False, parts=None):
    """The common options: ``--tiny``, ``--out``, ``--name``, and where a script has them ``--seeds``,
    ``--sets``, ``--cache`` and ``--report-only``, and the positional ``parts``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a smoke run of seconds into a temporary folder")
    p.add_argument("--out", type=Path, help=f"the report's folder (default {RESULTS}) or path DIR/NAME.md")
    p.add_argument("--name", help="file name of the report, without .md (default: the script's name)")
    if seeds is not None:
        p.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    if sets is not None:
        p.add_argument("--sets", nargs="+", choices=sets, default=list(default_sets or sets))
    if cache:
        p.add_argument("--cache", type=Path, nargs="+", help="JSON files of finished runs, all read (the "
                       "earliest file wins); new runs go to the first (default: results/cache/<name>.json)")
        p.add_argument("--report-only", action="store_true", help="write the report from the cache alone")
    if parts is not None:  # checked in parse: argparse's choices reject any default of nargs="*"
        p.add_argument("parts", nargs="*", default=list(parts), help=f"any of {', '.join(parts)} (all)")
        p.set_defaults(all_parts=list(parts))
    return p


def parse(p, argv, module, tiny=None, threads=1):
    """Parse ``argv`` and settle the common options; ``--tiny`` then overrides with ``TINY`` and ``tiny``."""
    args = p.parse_args(argv)
    if module == "__main__":  # run as python -m benchmarks.<name>
        module = sys.modules["__main__"].__spec__.name
    script = module.rsplit(".", 1)[-1]
    argv = sys.argv[1:] if argv is None else argv
    args.command = "OMP_NUM_THREADS=1 python -m " + shlex.join([module, *argv])
    if args.out is not None and args.out.suffix == ".md":  # --out DIR/NAME.md: the report's folder and name
        args.out, args.name = args.out.parent, args.name or args.out.stem
    args.name, args.max_rows, args.epochs = args.name or script, None, None
    if not set(getattr(args, "parts", [])) <= set(getattr(args, "all_parts", [])):
        p.error(f"parts: choose from {', '.join(args.all_parts)}")
    if args.tiny:
        for key, value in {**TINY, **(tiny or {})}.items():
            setattr(args, key, value)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix=f"{script}_")) if args.tiny else RESULTS
        print(f"writing to {args.out}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if hasattr(args, "cache") and args.cache is None:
        args.cache = [args.out / f"{script}_cache.json" if args.tiny else CACHE / f"{script}.json"]
    if threads:
        torch.set_num_threads(threads)
    return args


def shorten(model, epochs):
    """``--tiny``: every ``max_epochs`` (nested ones too) set to ``epochs``, ensembles cut to 2 members."""
    if epochs is None or not hasattr(model, "get_params"):
        return model
    params = model.get_params()
    model.set_params(**{k: epochs for k in params if k.endswith("max_epochs") or k == "max_steps"},
                     **{k: min(v, 2) for k, v in params.items()
                        if k.endswith("n_estimators") and isinstance(v, int)})
    return model


class Cache:
    """Finished runs, one JSON record each, identified by the values of the fields in ``key``."""

    def __init__(self, paths, key, report_only=False):
        self.paths, self.key, self.report_only = [Path(p) for p in paths], tuple(key), report_only
        self.records = {}
        for path in self.paths:
            for record in json.loads(path.read_text()) if path.exists() else []:
                self.records.setdefault(self._id(record), record)

    def _id(self, record):
        return tuple(record[k] for k in self.key)

    def run(self, fn, **key):
        """The cached record of ``key``, else ``{**key, **fn()}``, saved (None: skipped or report-only)."""
        if self._id(key) in self.records or self.report_only:
            return self.records.get(self._id(key))
        try:
            record = {**key, **fn()}
        except Unavailable as error:
            print(f"skipped {key}: {error}", flush=True)
            return None
        print(json.dumps(record), flush=True)
        self.records[self._id(key)] = record
        path = self.paths[0]
        own = json.loads(path.read_text()) if path.exists() else []
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(own + [record], indent=1))
        return record

    def get(self, **key):
        """The cached record of ``key``, or None (nothing is run)."""
        return self.records.get(self._id(key))

    def select(self, **allowed):
        """The cached records whose field values are among ``allowed`` (field: collection of values)."""
        return [r for r in self.records.values() if all(r.get(k) in v for k, v in allowed.items())]


class Timer:
    """``with Timer() as t:`` then ``t.wall`` and ``t.cpu``, in seconds (synchronising CUDA when used)."""

    def __enter__(self):
        self._sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()


def timed(fn, *args, **kwargs):
    """``(timer, fn(*args, **kwargs))``: the call's :class:`Timer` (``.wall``, ``.cpu``) and its result."""
    with Timer() as timer:
        out = fn(*args, **kwargs)
    return timer, out
