"""The demo's table: per dataset and trainer, zero-shot CLIP beside the trained model, Base / New / HM.

    python scripts/demo_table.py OUTPUT [--format text|markdown]

Trained: the base-to-novel runs under ``OUTPUT/base2new`` (mean over seeds, read as
``parse_test_res.py OUTPUT --table`` reads them). Zero-shot: the runs of
``scripts/zsclip/zeroshot.sh DATASET CFG base|new`` under ``OUTPUT/zeroshot``. Missing numbers are
shown as ``--``. Exits with 1 (and says why) when there is nothing to show.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from parse_test_res import (  # noqa: E402
    MISSING, TEST_END_SIGNALS, ParseError, collect_groups, harmonic_mean, read_accuracy, sort_datasets,
)

ZEROSHOT_TRAINER = "ZeroshotCLIP"


def mean(values):
    return sum(values) / len(values) if values else None


def zero_shot(root, dataset, cfg="vit_b16"):
    """``(base, new)`` zero-shot accuracies of ``dataset`` (None where the run is missing)."""
    out = []
    for side in ("base", "new"):
        log = osp.join(root, "zeroshot", dataset, ZEROSHOT_TRAINER, f"{cfg}_{side}", "log.txt")
        out.append(read_accuracy(log, TEST_END_SIGNALS) if osp.isfile(log) else None)
    return tuple(out)


def rows(root):
    """One row per (dataset, trainer): dataset, trainer, shots, zero-shot (B, N, HM), trained (B, N, HM)."""
    groups, _ = collect_groups(root)
    table = []
    for group in groups:
        if group.protocol != "base2new":
            continue
        for dataset in sort_datasets(group.datasets("base") + group.datasets("new")):
            trained = []
            for side in ("base", "new"):
                cell = group.cell(side, dataset)
                trained.append(mean(cell.values()) if cell else None)
            zs = zero_shot(root, dataset)
            table.append((dataset, group.key.trainer, group.key.shots,
                          zs + (harmonic_mean(*zs),), tuple(trained) + (harmonic_mean(*trained),)))
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
