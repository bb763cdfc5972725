#!/usr/bin/env python3
"""Kernel census from an Nsight Compute CSV (``ncu --metrics gpu__time_duration.sum --csv``): how many
kernels a generation launched and where their time went, per kernel class.

    python3 packaging/gpu/check/kernels.py ncu.csv   # prints Markdown
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

# First match wins: cuBLAS/CUTLASS GEMMs, candle's kernels by their names (candle-kernels/src/*.cu).
CLASSES = [
    ("matmul (cuBLAS)", ("gemm", "cutlass", "sm90_xmma", "ampere_", "cublas")),
    ("convolution", ("conv", "im2col", "col2im")),
    ("softmax", ("softmax",)),
    ("normalisation", ("layernorm", "rmsnorm", "group_norm")),
    ("reduction", ("reduce", "fast_sum", "fast_max", "fast_min", "fast_arg")),
    ("cast", ("cast_",)),
    ("copy / layout", ("copy", "ucopy", "transpose")),
    ("indexing", ("index", "gather", "scatter", "where")),
    ("elementwise", ("badd", "bsub", "bmul", "bdiv", "bmaximum", "bminimum", "affine", "u", "powf", "elu")),
]
UNITS = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0}


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for label, needles in CLASSES[:-1]:
        if any(needle in lowered for needle in needles):
            return label
    if any(lowered.startswith(needle) for needle in CLASSES[-1][1]):
        return CLASSES[-1][0]
    return "other"


def main() -> None:
    with open(sys.argv[1], newline="") as handle:
        lines = [line for line in handle if line.startswith('"')]  # ncu's own log lines start with ==
    count, seconds = defaultdict(int), defaultdict(float)
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        label = kernel_class(row["Kernel Name"])
        count[label] += 1
        seconds[label] += float(row["Metric Value"].replace(",", "")) * UNITS.get(row["Metric Unit"], 1e-9)
    total = sum(seconds.values())
    print()
    print(f"Kernel census: {sum(count.values())} kernels, {total * 1e3:.1f} ms of kernel time")
    print()
    print("| class | kernels | ms | share |")
    print("|---|---:|---:|---:|")
    for label in sorted(seconds, key=seconds.get, reverse=True):
        print(f"| {label} | {count[label]} | {seconds[label] * 1e3:.2f} | {seconds[label] / total:.0%} |")


if __name__ == "__main__":
    main()
