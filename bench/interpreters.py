#!/usr/bin/env python3
"""The demo's start-up on different interpreters: the same project built by the pykiln CLI
once per interpreter, then every binary measured interleaved in one run (each round in a
new random order, one warm-up round), with ratios to the first interpreter.

    python3 bench/interpreters.py [--rounds 20] ~/.pyenv/versions/3.11.7/bin/python3.11 3.11 PATH...

An interpreter is what `pykiln build --python` takes: a path, or a version that pykiln
python install built (`3.11` prefers the profile-guided build). Uses target/release/pykiln
(built if missing) and measures spawn → initialize response and → tools/list response
with bench/compare.py's own run (a cgroup per run when it can make one).
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (bench/compare.py)

ROOT = compare.ROOT


def build(pykiln, python, out):
    subprocess.run([str(pykiln), "build", str(ROOT / "examples" / "notes-server"), "--python", python,
                    "-o", str(out)], check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("interpreters", nargs="+")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    pykiln = ROOT / "target" / "release" / "pykiln"
    if not pykiln.is_file():
        subprocess.run(["cargo", "build", "--release", "-p", "pykiln-cli"], cwd=ROOT, check=True)
    out_dir = compare.CACHE / "interpreters"
    out_dir.mkdir(parents=True, exist_ok=True)
    bins = []
    for i, python in enumerate(args.interpreters):
        out = out_dir / f"notes-{i}"
        build(pykiln, python, out)
        bins.append((python, out))
    times = {b: [] for _, b in bins}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds + 1):
            order = [b for _, b in bins]
            random.shuffle(order)
            for b in order:
                db = os.path.join(d, f"{r}-{b.name}.db")
                t_init, t_list, _, _ = compare.one_run([str(b), "--db", db], dict(os.environ), "pykiln-notes")
                if r:  # round 0 warms the page cache and the native cache
                    times[b].append((t_init, t_list))
    first = statistics.median(t for t, _ in times[bins[0][1]])
    print(f"spawn → initialize and → tools/list, medians of {args.rounds} interleaved rounds")
    for python, b in bins:
        init = statistics.median(t for t, _ in times[b])
        listed = statistics.median(t for _, t in times[b])
        print(f"{init * 1000:6.0f} ms ({init / first:.3f}×)  {listed * 1000:6.0f} ms  {python}")


if __name__ == "__main__":
    main()
