"""The demo's table: per dataset and trainer, zero-shot CLIP beside the trained model, Base / New / HM.

    python scripts/demo_table.py OUTPUT [--format text|markdown]

Both come from the base-to-novel runs under ``OUTPUT/base2new`` as ``parse_test_res.py OUTPUT
--table`` reads them (mean over seeds): the trained models' and those of ``ZeroshotCLIP``, which
``scripts/benchmark.py`` runs as evaluations on the base and the new classes. Missing numbers are
shown as ``--``. Exits with 1 (and says why) when there is nothing to show.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from harness.tables.logs import ParseError  # noqa: E402
from harness.tables.metrics import MISSING, harmonic_mean  # noqa: E402
from harness.tables.runs import collect_groups, sort_datasets  # noqa: E402

ZEROSHOT_TRAINER = "ZeroshotCLIP"


def mean_accuracy(group, side, dataset):
    cell = group.cell(side, dataset)
    values = cell.values() if cell else []
    return sum(values) / len(values) if values else None


def rows(root):
    """One row per (dataset, trainer): dataset, trainer, shots, zero-shot (B, N, HM), trained (B, N, HM)."""
    groups, _ = collect_groups(root, layouts=("base2new",))
    zero_shot = {}
    for group in groups:
        if group.key.trainer == ZEROSHOT_TRAINER:
            for dataset in group.datasets("base") + group.datasets("new"):
                zero_shot[dataset] = tuple(mean_accuracy(group, side, dataset) for side in ("base", "new"))
    table = []
    for group in groups:
        if group.key.trainer == ZEROSHOT_TRAINER:
            continue
        for dataset in sort_datasets(group.datasets("base") + group.datasets("new")):
            trained = tuple(mean_accuracy(group, side, dataset) for side in ("base", "new"))
            zs = zero_shot.get(dataset, (None, None))
            table.append((dataset, group.key.trainer, group.key.shots,
                          zs + (harmonic_mean(*zs),), trained + (harmonic_mean(*trained),)))
    order = sort_datasets({r[0] for r in table})
    table.sort(key=lambda r: (order.index(r[0]), r[1]))
    return table


def fmt(value, signed=False):
    if value is None:
        return MISSING
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def render(table, markdown=False):
    header = ["Dataset", "Trainer", "Shots", "ZS Base", "ZS New", "ZS HM", "Base", "New", "HM", "dBase", "dNew"]
    lines = []
    for dataset, trainer, shots, zs, trained in table:
        delta = [t - z if t is not None and z is not None else None for t, z in zip(trained[:2], zs[:2])]
        lines.append([dataset, trainer, str(shots)] + [fmt(v) for v in zs + trained] + [fmt(d, True) for d in delta])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [header] + lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the output folder of the runs")
    parser.add_argument("--format", choices=("text", "markdown"), default="text")
    args = parser.parse_args(argv)
    try:
        table = rows(args.root)
    except ParseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not table:
        print(f"error: no base-to-novel runs under {args.root}", file=sys.stderr)
        return 1
    print(render(table, markdown=args.format == "markdown"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
