"""Check a data root against the layout the readers expect.

    python -m datasets.check --root DIR [--datasets NAME ...]

Per dataset it reports whether the folder, split file(s) and side files are found, names missing
files, and compares the number of images with the published split sizes (datasets.md section 6).
Exit status 1 when anything is missing (a count that differs from the published size is only
reported: miniature copies and partial downloads are legitimate). See DATASETS.md.
"""
import argparse
import os.path as osp
import sys

from .common import CONFIG_STEMS, DOCS, SplitDataset, resolve_dataset_name

MAX_NAMED = 5  # missing images named per dataset


def check_dataset(cls, root):
    """Return ``(ok, lines)`` describing one dataset under ``root``."""
    name = cls.__name__
    dataset_dir = osp.join(root, cls.dataset_dir)
    header = f"{name} ({cls.dataset_dir}/)"
    hint = f"  see {DOCS}#{cls.anchor}"
    if not osp.isdir(dataset_dir):
        return False, [f"{header}: MISSING", f"  missing folder: {dataset_dir}", hint]

    missing, lines = [], []
    image_dir = osp.join(dataset_dir, cls.image_dir)
    if not osp.isdir(image_dir):
        missing.append(image_dir)
    for rel in cls.required_files():
        if not osp.isfile(osp.join(dataset_dir, rel)):
            missing.append(osp.join(dataset_dir, rel))
    if issubclass(cls, SplitDataset) and osp.join(dataset_dir, cls.split_file) in missing:
        fallback = [f for f in cls.fallback_files if not osp.exists(osp.join(dataset_dir, f))]
        if cls.fallback_files and not fallback:
            lines.append(f"  note: without the split file the reader generates a RANDOM split from "
                         f"{', '.join(cls.fallback_files)} (not comparable with published results)")
        elif not cls.fallback_files and osp.isdir(image_dir):
            lines.append("  note: without the split file the reader generates a RANDOM split from the "
                         "image folders (not comparable with published results)")
    for path in missing:
        lines.append(f"  missing: {path}")

    counts = []
    if not missing:
        listed = cls.listed_images(dataset_dir)
        for key, value in listed.items():
            if isinstance(value, int):
                found = value
            else:
                absent = [p for p in value if not osp.isfile(p)]
                found = len(value) - len(absent)
                if absent:
                    named = ", ".join(absent[:MAX_NAMED]) + (f", ... and {len(absent) - MAX_NAMED} more"
                                                             if len(absent) > MAX_NAMED else "")
                    lines.append(f"  missing {len(absent)} of {len(value)} {key} images listed in the split: {named}")
                    missing.extend(absent)
            expected = cls.expected.get(key)
            note = "" if expected is None else (" (as published)" if found == expected else f" (published: {expected:,})")
            counts.append(f"{key} {found:,}{note}")
        mini = " [miniature copy]" if osp.isfile(osp.join(dataset_dir, "MINIATURE_DATASET.txt")) else ""
        lines.insert(0, "  images: " + ", ".join(counts) + mini)
    if missing:
        lines.append(hint)
    return not missing, [f"{header}: {'found' if not missing else 'INCOMPLETE'}"] + lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m datasets.check", description="Check a data root (see DATASETS.md).")
    parser.add_argument("--root", required=True, help="the DATASET.ROOT to check")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="registry names or config stems (default: all 15)")
    args = parser.parse_args(argv)

    from dassl.data.datasets import DATASET_REGISTRY

    try:
        names = list(CONFIG_STEMS.values()) if not args.datasets else [resolve_dataset_name(n) for n in args.datasets]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = osp.abspath(osp.expanduser(args.root))
    print(f"Checking {root}")
    n_ok = 0
    for name in dict.fromkeys(names):
        ok, lines = check_dataset(DATASET_REGISTRY.get(name), root)
        n_ok += ok
        print("\n".join(lines))
    print(f"{n_ok} of {len(dict.fromkeys(names))} datasets complete")
    return 0 if n_ok == len(dict.fromkeys(names)) else 1


if __name__ == "__main__":
    sys.exit(main())
