#!/usr/bin/env python3
"""Totals of an adaptive-attack run recorded in chunks (robust-figures/README.md).

    python3 scripts/chunk-totals.py paper-linf0.1 robust-plain-fpr1-linf0.2

For each name, reads robust-figures/adaptive-<name>/adaptive.csv (the first images) and every
robust-figures/adaptive-<name>-images<A>-<B>/adaptive.csv, prints one row per chunk and the
totals over all of them (counts of images, not shares, so chunks of any size add up).
"""
import csv
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "robust-figures")
KEYS = [
    "clean_accuracy",
    "clean_pass",
    "evade_success",
    "flagged",
    "wrong_label",
    "robust_accuracy_reject",
    "robust_accuracy_correct",
]


def chunks(name):
    first = os.path.join(ROOT, f"adaptive-{name}")
    rest = glob.glob(os.path.join(ROOT, f"adaptive-{name}-images*-*"))
    pattern = re.compile(r"-images(\d+)-(\d+)$")
    keyed = [(0, first)] if os.path.isdir(first) else []
    for d in rest:
        m = pattern.search(d)
        if m:
            keyed.append((int(m.group(1)), d))
    return [d for _, d in sorted(keyed)]


def main(names):
    if not names:
        sys.exit(__doc__)
    for name in names:
        folders = chunks(name)
        if not folders:
            sys.exit(f"no folder robust-figures/adaptive-{name}[-images*]")
        total = {k: 0.0 for k in KEYS}
        images = 0
        print(f"{name}:")
        for d in folders:
            path = os.path.join(d, "adaptive.csv")
            if not os.path.isfile(path):
                print(f"  {os.path.basename(d)}: no adaptive.csv (unfinished)")
                continue
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    n = int(row["images"])
                    images += n
                    counts = {k: round(float(row[k]) * n) for k in KEYS}
                    for k in KEYS:
                        total[k] += counts[k]
                    shares = " ".join(f"{k}={counts[k]}/{n}" for k in KEYS)
                    print(f"  {os.path.basename(d)}: {shares}")
        shares = " ".join(f"{k}={total[k]:.0f}/{images} ({100 * total[k] / images:.1f}%)" for k in KEYS)
        print(f"  total: {shares}")


if __name__ == "__main__":
    main(sys.argv[1:])
