#!/usr/bin/env python3
"""Start-up and memory of the packaged demo server against the same server in a venv.

    python3 bench/startup.py [--runs 15] [--binary target/release/pykiln-notes]

Runs the variants interleaved (A B A B ...) after one warm-up round, and reports
medians and ratios from this one run (absolute times on a shared machine mean little):
spawn -> initialize response, spawn -> tools/list response, and the RSS of the
process tree after tools/list. The venv (same packages, `pip install
examples/notes-server`) is created under ~/.cache/pykiln/bench on first use.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def venv_python(python: str) -> Path:
    tag = subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], text=True).strip()
    venv = Path.home() / ".cache" / "pykiln" / "bench" / f"venv-{tag}"
    exe = venv / "bin" / "python"
    if not exe.exists():
        subprocess.check_call([python, "-m", "venv", str(venv)])
        subprocess.check_call([str(exe), "-m", "pip", "install", "-q", str(ROOT / "examples" / "notes-server")])
    return exe


def tree_rss_kib(pid: int) -> int:
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except OSError:
            pass
    return total


def one_run(cmd, env):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    send = lambda m: (proc.stdin.write((json.dumps(m) + "\n").encode()), proc.stdin.flush())
    send(INIT)
    first = proc.stdout.readline()
    t_init = time.perf_counter() - t0
    assert b'"id":1' in first.replace(b" ", b""), first
    send(INITIALIZED)
    send(LIST)
    second = proc.stdout.readline()
    t_list = time.perf_counter() - t0
    assert b"search_notes" in second, second[:200]
    rss = tree_rss_kib(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=30)
    return t_init, t_list, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "pykiln-notes"))
    ap.add_argument("--python", default=os.environ.get("PYO3_PYTHON", "python3"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pykiln-bench-")
    base_env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYKILN_NOTES_DB": os.path.join(tmp, "notes.db")}
    variants = {
        "pykiln binary": [args.binary],
        "venv python -m": [str(venv_python(args.python)), "-m", "pykiln_notes"],
    }
    results = {name: [] for name in variants}
    for i in range(args.runs + 1):
        for name, cmd in variants.items():
            r = one_run(cmd, dict(base_env))
            if i > 0:  # round 0 warms the page cache
                results[name].append(r)
    med = {name: [statistics.median(x[k] for x in rs) for k in range(3)] for name, rs in results.items()}
    ref = med["venv python -m"]
    size = os.path.getsize(args.binary)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; runs: {args.runs} interleaved after 1 warm-up")
    print(f"binary size: {size / 1e6:.1f} MB\n")
    print("| variant | spawn→initialize (ms) | spawn→tools/list (ms) | RSS after tools/list (MB) | init ratio vs venv | RSS ratio vs venv |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (ti, tl, rss) in med.items():
        print(f"| {name} | {ti * 1000:.0f} | {tl * 1000:.0f} | {rss / 1024:.1f} | {ti / ref[0]:.2f} | {rss / ref[2]:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
