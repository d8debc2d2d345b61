#!/usr/bin/env python3
"""Interpreters compared on their own, without pykiln: start-up with a dozen standard
library imports, and a CPU-bound task (a loop and json), each interpreter run in turn in
every round (a new random order each round, one warm-up round), medians and ratios to
the first. What an optimisation of the interpreter itself (PGO, LTO) gives.

    python3 bench/python_speed.py [--rounds 20] PYTHON PYTHON...
"""
import argparse
import random
import statistics
import subprocess
import time

IMPORTS = (
    "import asyncio, json, decimal, ssl, sqlite3, email.parser, http.client, typing, "
    "dataclasses, pathlib, logging, argparse"
)
CPU = r"""
import json, time
t = time.perf_counter()
d = [{"k": i, "v": str(i) * 3, "l": list(range(i % 10))} for i in range(20000)]
for _ in range(5):
    d2 = json.loads(json.dumps(d))
acc = 0
for i in range(600000):
    acc = (acc * 31 + i) % 1000003
print(time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("pythons", nargs="+")
    args = ap.parse_args()
    start = {p: [] for p in args.pythons}
    cpu = {p: [] for p in args.pythons}
    for r in range(args.rounds + 1):
        order = list(args.pythons)
        random.shuffle(order)
        for p in order:
            t = time.perf_counter()
            subprocess.run([p, "-I", "-c", IMPORTS], check=True, timeout=60)
            s = time.perf_counter() - t
            out = subprocess.run([p, "-I", "-c", CPU], check=True, capture_output=True,
                                 text=True, timeout=120).stdout
            if r:  # round 0 warms the page cache
                start[p].append(s)
                cpu[p].append(float(out))
    base_s = statistics.median(start[args.pythons[0]])
    base_c = statistics.median(cpu[args.pythons[0]])
    for p in args.pythons:
        s = statistics.median(start[p])
        c = statistics.median(cpu[p])
        print(f"{p}\n   start-up + imports {s * 1000:.1f} ms ({s / base_s:.3f}x)"
              f"   cpu task {c * 1000:.0f} ms ({c / base_c:.3f}x)")


if __name__ == "__main__":
    main()
