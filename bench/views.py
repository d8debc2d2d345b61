#!/usr/bin/env python3
"""What on-disk views cost: pykiln at another revision against this checkout.

    python3 bench/views.py [--before REV] [--runs 8] [--out bench/VIEWS.md]

Issue 25 gave every distribution that ships data files an on-disk view by default
(before, only those a source scan flagged), hard-linked the view's native images to the
native cache instead of writing them twice, and made the per-start check of a view
cheap (owners, modes and sizes; digests only in `--pykiln verify`). This measures what
that costs and saves, building the same servers with the `pykiln` CLI of both
revisions:

- the demo (examples/notes-server), `markitdown-mcp` (many distributions with data:
  magika's models, pdfminer's CMaps, speech_recognition's language model, onnxruntime)
  and `babel` + `pytz` (a data-heavy pair: 30 MB of locale data, 600 zone files);
- interleaved (before, after, before, after, …; one warm-up round; medians):
  spawn → `initialize` on an empty cache (a first start: native images and views are
  written; `sync` and a second's pause before each, so that none pays for the
  previous one's writeback) and on a warm one; the bytes the first start wrote to the cache (native
  images, views); and, for babel + pytz, how long a start takes to check their views
  (the runtime's own debug log, `on-disk file view checked … elapsed`).

Everything lives under ~/.cache/pykiln/bench/views: a worktree of REV and its target
directory (so the "before" CLI and its runner are built once per revision), the
binaries, and the caches of the runs. Prints a markdown report and writes it to --out.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "pykiln" / "bench" / "views"
MARKITDOWN = "markitdown-mcp==0.0.1a8"
# six first: the revision before issue 25 dropped the analysis of the distribution
# `--from` names first (the bug that issue fixed), which would leave babel without the
# view it needs there and nothing to compare.
DATA_PAIR = ["six==1.17.0", "babel==2.17.0", "pytz==2025.2"]
# A module:function the CLI accepts as entry point for a build made to measure imports.
DATA_ENTRY = "babel.core:get_global"

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}


def sh(cmd, **kw):
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def cli_at(rev):
    """The pykiln CLI of `rev` (a worktree under CACHE), or of this checkout (None)."""
    if rev is None:
        sh(["cargo", "build", "--release", "--locked", "-p", "pykiln-cli"], cwd=ROOT)
        return ROOT / "target" / "release" / "pykiln"
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = CACHE / f"rev-{sha[:12]}"
    if not (tree / "Cargo.toml").exists():
        shutil.rmtree(tree, ignore_errors=True)
        sh(["git", "worktree", "prune"], cwd=ROOT)
        sh(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT)
    sh(["cargo", "build", "--release", "--locked", "-p", "pykiln-cli"], cwd=tree)
    return tree / "target" / "release" / "pykiln"


def build(cli, label, args, out):
    """Build with `cli` (its runner is built and cached the first time)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        sh([str(cli), "build", *args, "-o", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def spawn_init(binary, args, cache):
    """Seconds from spawn to the `initialize` response, with XDG_CACHE_HOME=cache."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "XDG_CACHE_HOME": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=str(cache))
    proc.stdin.write((json.dumps(INIT) + "\n").encode())
    proc.stdin.flush()
    line = proc.stdout.readline()
    took = time.perf_counter() - t0
    assert b'"id":1' in line.replace(b" ", b""), (binary, line[:300])
    proc.stdin.close()
    proc.wait(timeout=60)
    return took


def tree_bytes(path):
    """Bytes of the distinct files (inodes) under `path`: a hard link counts once."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def written(cache):
    base = cache / "pykiln"
    native = tree_bytes(base / "native") if (base / "native").exists() else 0
    # A view's hard links to native images are not bytes of their own: the views' own
    # bytes are what the whole cache holds beyond the native images.
    both = tree_bytes(base) if base.exists() else 0
    return native, both - native, both


def view_check_ms(binary, cache):
    """Milliseconds a warm start spends checking the babel and pytz views."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "XDG_CACHE_HOME": str(cache),
           "PYKILN_LOG": "pykiln=debug"}
    code = "import babel.core, pytz; babel.core.get_global('zone_aliases'); pytz.timezone('Europe/Paris')"
    out = subprocess.run([str(binary), "--pykiln", "python", "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    total = 0.0
    for line in out.stderr.splitlines():
        m = re.search(r"on-disk file view checked.*group=(\S+).*elapsed=([\d.]+)(ms|µs|s)", line)
        if m:
            scale = {"ms": 1.0, "µs": 1e-3, "s": 1e3}[m.group(3)]
            total += float(m.group(2)) * scale
    return total


def fresh(tag):
    d = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=CACHE / "runs"))
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="HEAD~1", help="the revision to compare with (default HEAD~1)")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "VIEWS.md"))
    a = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "runs").mkdir(exist_ok=True)
    before_sha = subprocess.run(["git", "rev-parse", "--short", a.before], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
    after_sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
    clis = {"before": cli_at(a.before), "after": cli_at(None)}
    bins = {}
    for side, cli in clis.items():
        rev = before_sha if side == "before" else after_sha + "+"
        d = CACHE / "bin" / (rev if side == "before" else f"after-{int(time.time())}")
        bins[(side, "demo")] = build(cli, side, ["examples/notes-server"], d / "pykiln-notes")
        bins[(side, "markitdown-mcp")] = build(cli, side, ["--from", MARKITDOWN], d / "markitdown-mcp")
        data_args = [x for r in DATA_PAIR for x in ("--from", r)] + ["--entry-point", DATA_ENTRY]
        bins[(side, "babel+pytz")] = build(cli, side, data_args, d / "babel-pytz")
    servers = {"demo": ["--db", "notes.db"], "markitdown-mcp": []}
    first = {k: [] for k in bins if k[1] in servers}
    warm = {k: [] for k in bins if k[1] in servers}
    wrote = {}
    checks = {("before", "babel+pytz"): [], ("after", "babel+pytz"): []}
    warm_caches = {}
    for k in first:
        warm_caches[k] = fresh("warm")
        spawn_init(bins[k], servers[k[1]], warm_caches[k])  # fills it
    data_caches = {}
    for k in checks:
        data_caches[k] = fresh("data")
        view_check_ms(bins[k], data_caches[k])  # writes the views
    for round_ in range(a.runs + 1):
        for k in first:
            c = fresh("first")
            # Each first start on a quiet disk: the previous one's writeback (a quarter
            # of a gigabyte for markitdown) would otherwise land on whichever runs next.
            os.sync()
            time.sleep(1)
            t = spawn_init(bins[k], servers[k[1]], c)
            if round_:
                first[k].append(t)
                wrote[k] = written(c)
            shutil.rmtree(c, ignore_errors=True)
            t = spawn_init(bins[k], servers[k[1]], warm_caches[k])
            if round_:
                warm[k].append(t)
        for k in checks:
            ms = view_check_ms(bins[k], data_caches[k])
            if round_:
                checks[k].append(ms)
    med = lambda xs: statistics.median(xs)  # noqa: E731
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    lines = [
        "# On-disk views: before and after issue 25",
        "",
        f"`python3 bench/views.py --before {a.before} --runs {a.runs}`: {before_sha} (before) against "
        f"{after_sha} with this checkout's changes (after); {platform.node()}, {os.cpu_count()} cores, "
        f"{platform.release()}. Medians of {a.runs} interleaved rounds; each first start on an empty "
        "cache directory.",
        "",
        "| server | | size | views | first start | warm start | written at first start (native + views = distinct bytes) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for server in servers:
        for side in ("before", "after"):
            k = (side, server)
            info = json.loads(subprocess.run([str(bins[k]), "--pykiln", "info"], capture_output=True,
                                             check=True).stdout)
            native, views, both = wrote[k]
            lines.append(
                f"| {server} | {side} | {mb(bins[k].stat().st_size)} | {len(info['on_disk'])} | "
                f"{med(first[k]) * 1e3:.0f} ms | {med(warm[k]) * 1e3:.0f} ms | "
                f"{mb(native)} + {mb(views)} = {mb(both)} |")
    lines += [
        "",
        "| babel + pytz views | check at start (median) |",
        "|---|---:|",
    ]
    for side in ("before", "after"):
        lines.append(f"| {side} | {med(checks[(side, 'babel+pytz')]):.1f} ms |")
    for k in first:
        lines.append("")
        lines.append(f"<!-- {k}: first {[round(x * 1e3) for x in first[k]]} warm "
                     f"{[round(x * 1e3) for x in warm[k]]} -->")
    report = "\n".join(lines) + "\n"
    Path(a.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
