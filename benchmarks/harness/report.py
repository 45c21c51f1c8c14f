"""One report writer: number formats, markdown tables, the report file, and the plotting helpers."""

import numpy as np


def fmt(values, digits=2):
    """One value as it is; several as ``mean ± std`` (over seeds)."""
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return f"{values.ravel()[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def table(header, rows):
    """Markdown lines of a table: ``header`` a list of column titles, ``rows`` lists of cells."""
    return ["| " + " | ".join(map(str, header)) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def seeds_label(name, n):
    return f"{name} ({n} seed{'s' * (n > 1)})"


def epochs(model):
    """``"E epochs"``, or ``"E1+E2+... epochs"`` for the members of an ensemble."""
    return "+".join(str(member.n_iter_) for member in getattr(model, "estimators_", [model])) + " epochs"


def grid(records, key, rows, cols, *, row="set", col="model", corner=None, cell=fmt, best=None):
    """A table of records: one row per value of the field ``row``, one column per value of ``col``.

    Each cell summarises the values of ``key`` (one per seed) with ``cell`` (``fmt``: mean ± std);
    ``best`` (``max`` or ``min``) bolds the best mean of a row. A row names its number of seeds; a
    cell with fewer seeds than its row says so. Rows without any value are left out.
    """
    lines = []
    for name in rows:
        values = {c: [r[key] for r in records if r[row] == name and r[col] == c and r.get(key) is not None]
                  for c in cols}
        if not any(values.values()):
            continue
        n_seeds = len({r["seed"] for r in records if r[row] == name})
        top = best((c for c in cols if values[c]), key=lambda c: np.mean(values[c])) if best else None
        cells = []
        for c in cols:
            text = cell(values[c]) if values[c] else "—"
            text += f" ({len(values[c])} seeds)" if 0 < len(values[c]) < n_seeds and cell is fmt else ""
            cells.append(f"**{text}**" if c == top else text)
        lines.append([seeds_label(name, n_seeds), *cells])
    return table([corner or row, *cols], lines)


def reduced(reduce, digits=4):
    """A ``cell`` for :func:`grid`: ``reduce`` of the values, in ``digits`` significant digits."""
    return lambda values: f"{reduce(values):.{digits}g}"


def header(title, command, doc=None):
    """A report's first lines: its title, the command that reproduces it and, from the script's
    docstring ``doc``, the protocol (its paragraphs after the first line, usage lines left out)."""
    protocol = [part.strip().removesuffix(":") for part in (doc or "").split("\n\n")[1:]
                if not part.startswith("    ")]  # (a colon introduced the usage lines)
    return [f"# {title}", "", "Command (repository root):", "", f"    {command}", "",
            *(line for part in protocol for line in (part, ""))]


def write(path, lines):
    """Write the report and print it."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    path.write_text(text)
    print(text, flush=True)


def publish(args, title, doc, lines):
    """Write the report ``NAME.md`` (``args.name``) in ``args.out``: the header, then ``lines``."""
    write(args.out / f"{args.name}.md", [*header(title, args.command, doc), *lines])


def join_parts(args, title, doc, parts, prefix=None):
    """Write ``NAME.md``: the header, then every ``PREFIX_<part>.md`` found (PREFIX: ``args.name``)."""
    paths = [args.out / f"{prefix or args.name}_{part}.md" for part in parts]
    publish(args, title, doc, [path.read_text() for path in paths if path.exists()])


def show(row):
    """Print a table row as it is made (a long run shows its progress); return it."""
    print(row, flush=True)
    return row


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path, dpi=120):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def save_grids(path, grids, n_cols, vmax, cmap="gray_r", width=2.4):
    """One panel per entry of ``grids`` (title: images ``(n, h, w)``) in rows of ``n_cols``; a PNG."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(width * len(grids), width + 0.3), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        images = np.asarray(images, dtype=float)
        (n, h, w), n_rows = images.shape, -(-len(images) // n_cols)
        tiled = np.full((n_rows * n_cols, h + 1, w + 1), np.nan)  # one blank pixel between images
        tiled[:n, :h, :w] = images
        tiled = tiled.reshape(n_rows, n_cols, h + 1, w + 1).transpose(0, 2, 1, 3)
        ax.imshow(tiled.reshape(n_rows * (h + 1), -1), cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    save(fig, path, dpi=110)
