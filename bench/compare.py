#!/usr/bin/env python3
"""pykiln against a venv and PyInstaller, on four servers: the demo, mcp-server-time, a
DuckDB server (a big native library) and a FastMCP server (a heavy framework).

    python3.12 bench/compare.py --python python3.11 [--runs 12] [--out bench/RESULTS.md] [--skip-build-times]

Run it under an interpreter that is not measured (above: 3.12 measuring 3.11): a
harness running on the venv's own interpreter shares its shared-library pages with it,
which lowers the venv's PSS (by 3 MB of libpython's 5 on pyenv's 3.11.7).

Builds each server four ways: the pykiln binary, `python -m` in a venv holding only that
server's dependencies, PyInstaller `--onefile` and `--onedir` (from a second venv of
those dependencies and PyInstaller); the pykiln binary also runs with its start-up prefetch off (PYKILN_PREFETCH=0),
with its start-up source strings compiled at run time (PYKILN_PRECOMPILED=off), with
every native image in memory (PYKILN_NATIVE_CACHE=off) and on an empty native
cache (a first start). Then measures them interleaved in one run (A B C D A B C D …, one warm-up round,
medians and ratios; absolute times on a shared machine mean little): spawn → initialize
response, spawn → tools/list response, one tools/call round trip, file size (onedir:
the whole directory), build times (clean, and after a one-line edit of an app .py; the
demo only), and memory, summed over the process tree (PyInstaller's onefile bootloader
is a parent process) after tools/list: RSS, PSS, anonymous memory, the memfd bytes the
processes hold (pages the kernel cannot drop without swap, mapped or not), peak RSS,
and, as root with the memory controller, the peak of each run's own cgroup (v2
`memory.peak` or v1 `memory.max_usage_in_bytes`). "Footprint" is anonymous + memfd:
what a process pins; file-backed pages (a venv's libraries, pykiln's native cache) are
shared page cache the kernel can reclaim.

Everything it creates lives under ~/.cache/pykiln/bench; the mcp-server-time binary is
a small cargo project there that depends on this repository's crates by path; the DuckDB
and FastMCP servers (bench/servers/) are built with the `pykiln` CLI. Writes a
markdown table with machine information to --out and prints it.
"""
import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import startup_profile  # noqa: E402  (bench/startup_profile.py)

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "pykiln" / "bench"
TIME_PIN = "mcp-server-time==2026.10.19"
PYINSTALLER_PIN = "pyinstaller==6.22.3"

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
NO_PREFETCH = "pykiln, PYKILN_PREFETCH=0"
NOT_PRECOMPILED = "pykiln, PYKILN_PRECOMPILED=off"
IN_MEMORY = "pykiln, PYKILN_NATIVE_CACHE=off"
FIRST = "pykiln, first start (empty native cache)"
CLI = "pykiln CLI (runner + appended archive)"
OPT = "pykiln, optimized CPython"
OPT_VENV = "venv, optimized CPython"
PORTABLE = "pykiln CLI, own CPython (glibc 2.17)"

SERVERS = {
    "pykiln-notes": {
        "module": "pykiln_notes",
        "entry": "from pykiln_notes.server import main\nmain()\n",
        "tool": ("list_notes", {}),
        "expect": b"search_notes",
    },
    "mcp-server-time": {
        "module": "mcp_server_time",
        "entry": "from mcp_server_time import main\nmain()\n",
        "tool": ("get_current_time", {"timezone": "Etc/UTC"}),
        "expect": b"convert_time",
    },
    "bench-duckdb": {
        "module": "bench_duckdb",
        "entry": "from bench_duckdb.server import main\nmain()\n",
        "tool": ("count_kilns", {}),
        "expect": b"count_kilns",
        "project": ROOT / "bench" / "servers" / "duckdb-server",
    },
    "bench-fastmcp": {
        "module": "bench_fastmcp",
        "entry": "from bench_fastmcp.server import main\nmain()\n",
        "tool": ("add", {"a": 2, "b": 3}),
        "expect": b"log_firing",
        "project": ROOT / "bench" / "servers" / "fastmcp-server",
    },
}
# Servers packed by cargo (a pykiln::main! crate) besides the CLI; the others only by the CLI.
CARGO_SERVERS = ("pykiln-notes", "mcp-server-time")


def sh(cmd, **kw):
    subprocess.check_call(cmd, stdout=subprocess.DEVNULL, **kw)


def timed(cmd, **kw):
    t0 = time.perf_counter()
    sh(cmd, **kw)
    return time.perf_counter() - t0


def python_version(python):
    return subprocess.check_output([python, "-c", "import platform; print(platform.python_version())"], text=True).strip()


def python_tag(python):
    return subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], text=True).strip()


def server_packages(server):
    """What `pip install` needs for one server: its project or its pin, nothing else."""
    if server == "pykiln-notes":
        return [str(ROOT / "examples" / "notes-server")]
    if server == "mcp-server-time":
        return [TIME_PIN]
    return [str(SERVERS[server]["project"])]


def venv(python, server, extra=(), pip=None):
    """A venv of `python` holding only `server`'s dependencies (what `uvx` gives a user)
    and `extra` (PyInstaller, for the venv it builds from; never the one timed).
    Distributions' own interpreters have no ensurepip (Debian's is in python3.X-venv):
    such a venv is made --without-pip and filled by `pip`, another venv's interpreter
    (pip --python)."""
    packages = server_packages(server) + list(extra)
    h = hashlib.sha256(str(Path(python).resolve()).encode())
    for p in packages:
        h.update(b"\0" + p.encode())
        # A project in this repository: its content, so an edit makes a new venv.
        for f in sorted(Path(p).rglob("*")) if Path(p).is_dir() else ():
            if f.is_file() and "__pycache__" not in f.parts and ".egg-info" not in str(f):
                h.update(str(f.relative_to(p)).encode() + b"\0" + f.read_bytes())
    key = h.hexdigest()[:12]
    d = CACHE / "venvs" / f"{server}-{python_tag(python)}-{key}"
    exe = d / "bin" / "python"
    if not (d / ".complete").exists():
        shutil.rmtree(d, ignore_errors=True)
        if pip is None:
            sh([python, "-m", "venv", str(d)])
            sh([str(exe), "-m", "pip", "install", "-q", *packages])
        else:
            sh([python, "-m", "venv", "--without-pip", str(d)])
            sh([str(pip), "-m", "pip", "--python", str(exe), "install", "-q", *packages])
        (d / ".complete").write_text("\n".join(packages))
    return exe


def optimized_python(python):
    """The distribution's own CPython of the same minor version, built with PGO and LTO
    (Debian's and Ubuntu's /usr/bin/python3.X; its static library comes with
    python3.X-dev): None when there is none, or when it is `python` itself."""
    tag = python_tag(python)
    cand = Path(f"/usr/bin/python{tag}")
    if not cand.exists() or cand.resolve() == Path(shutil.which(python) or python).resolve():
        return None
    lib = subprocess.check_output([str(cand), "-c", "import sysconfig as s, os; "
                                   "print(os.path.join(s.get_config_var('LIBPL'), s.get_config_var('LIBRARY')))"],
                                  text=True).strip()
    return str(cand) if Path(lib).is_file() else None


def time_server_project(python):
    """A cargo project packing mcp-server-time with pykiln (outside the workspace)."""
    d = CACHE / "time-server"
    (d / "src").mkdir(parents=True, exist_ok=True)
    (d / "py").mkdir(exist_ok=True)
    (d / "py" / "pyproject.toml").write_text(
        '[project]\nname = "bench-time"\nversion = "1.0.0"\n'
        f'dependencies = ["{TIME_PIN}"]\n\n[tool.pykiln]\nentry-point = "mcp_server_time:main"\n'
        'packages = ["bench_time"]\n')
    (d / "py" / "bench_time").mkdir(exist_ok=True)
    (d / "py" / "bench_time" / "__init__.py").write_text('"""Nothing: the server is the dependency."""\n')
    (d / "Cargo.toml").write_text(
        '[package]\nname = "bench-time-server"\nversion = "0.1.0"\nedition = "2024"\n\n'
        "[workspace]\n\n"
        f'[dependencies]\npykiln = {{ path = "{ROOT}/crates/pykiln" }}\n'
        f'[build-dependencies]\npykiln-build = {{ path = "{ROOT}/crates/pykiln-build" }}\n\n'
        '[profile.release]\ndebug = false\nstrip = "symbols"\npanic = "abort"\n\n'
        '[profile.release.build-override]\nopt-level = 3\n')
    (d / "build.rs").write_text('fn main() {\n    pykiln_build::App::from_project("py").run_build_script();\n}\n')
    (d / "src" / "main.rs").write_text("pykiln::main!();\n")
    (d / ".cargo").mkdir(exist_ok=True)
    shutil.copy(ROOT / ".cargo" / "config.toml", d / ".cargo" / "config.toml")
    return d


def cargo_build(project, target_dir, env):
    return timed(["cargo", "build", "--release", "--quiet", "--manifest-path", str(project / "Cargo.toml"),
                  "--target-dir", str(target_dir)], env=env)


def pyinstaller(venv_py, name, entry, onefile, module):
    work = CACHE / "pyinstaller" / ("onefile" if onefile else "onedir") / name
    work.mkdir(parents=True, exist_ok=True)
    script = work / f"{name.replace('-', '_')}_entry.py"
    script.write_text(entry)
    dist = work / "dist"
    cmd = [str(venv_py), "-m", "PyInstaller", "--noconfirm", "--log-level", "ERROR", "--name", name,
           "--distpath", str(dist), "--workpath", str(work / "build"), "--specpath", str(work),
           "--collect-submodules", module,
           "--onefile" if onefile else "--onedir", str(script)]
    return cmd, (dist / name if onefile else dist / name / name)


MEMORY = ("rss", "pss", "anon", "memfd", "hwm", "cgroup")


def tree_memory_kib(pid):
    """Memory of a process tree in KiB: RSS, PSS and anonymous memory (smaps_rollup),
    memfd bytes held (allocated blocks of every memfd a process has open, each counted
    once: mapped or not, the kernel cannot reclaim them), peak RSS (VmHWM)."""
    total = dict.fromkeys(MEMORY[:-1], 0)
    seen, pids = set(), [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                field = {"Rss": "rss", "Pss": "pss", "Anonymous": "anon"}.get(key)
                if field:
                    total[field] += int(value.split()[0])
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total["hwm"] += int(line.split()[1])
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}").startswith("/memfd:"):
                        st = os.stat(f"/proc/{p}/fd/{fd}")
                        if st.st_ino not in seen:
                            seen.add(st.st_ino)
                            total["memfd"] += st.st_blocks // 2
                except OSError:
                    pass
            pids.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except OSError:
            pass
    return total


class Cgroup:
    """A fresh memory cgroup for one run (v2 with the memory controller, else v1's
    memory hierarchy); `None` from `make` where there is none or we may not create one."""

    def __init__(self, path, peak_file):
        self.path, self.peak_file = path, peak_file

    @staticmethod
    def make(n):
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text().split():
            base, peak = v2, "memory.peak"
        elif Path("/sys/fs/cgroup/memory/memory.max_usage_in_bytes").exists():
            base, peak = Path("/sys/fs/cgroup/memory"), "memory.max_usage_in_bytes"
        else:
            return None
        path = base / f"pykiln-bench-{os.getpid()}-{n}"
        try:
            path.mkdir()
        except OSError:
            return None
        return Cgroup(path, peak)

    def enter(self):
        """In the child, before exec."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_kib(self):
        return int((self.path / self.peak_file).read_text()) // 1024

    def remove(self):
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.02)


RUNS = iter(range(1 << 30))


def one_run(cmd, env, server):
    spec = SERVERS[server]
    cg = Cgroup.make(next(RUNS))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=cg.enter if cg else None)

    def send(m):
        proc.stdin.write((json.dumps(m) + "\n").encode())
        proc.stdin.flush()

    send(INIT)
    first = proc.stdout.readline()
    t_init = time.perf_counter() - t0
    assert b'"id":1' in first.replace(b" ", b""), (cmd, first[:300])
    send(INITIALIZED)
    send(LIST)
    second = proc.stdout.readline()
    t_list = time.perf_counter() - t0
    assert spec["expect"] in second, (cmd, second[:300])
    mem = tree_memory_kib(proc.pid)
    mem["cgroup"] = cg.peak_kib() if cg else None
    name, args = spec["tool"]
    t1 = time.perf_counter()
    send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": args}})
    third = proc.stdout.readline()
    t_call = time.perf_counter() - t1
    assert b'"id":3' in third.replace(b" ", b"") and b'"isError":true' not in third.replace(b" ", b""), third[:300]
    proc.stdin.close()
    proc.wait(timeout=30)
    if cg:
        cg.remove()
    return t_init, t_list, t_call, mem


# Run inside the packed interpreter: the importer's own cost per import, per module
# (best of 5 calls each), then the median and mean over modules. get_code includes
# unmarshalling, which any importer pays; it is timed separately (marshal.loads of the
# same code) and subtracted to give the finder's overhead: lookup, checksum, zstd,
# spec and co_filename.
FINDER = r"""
import marshal, statistics, sys, time
imp = next(f for f in sys.meta_path if type(f).__name__ == "PykilnImporter")
names = [n for n in imp._module_names() if not n.endswith("__main__") and not imp._is_extension(n)]
names = names[::3][:2000]
dumped = {n: marshal.dumps(imp.get_code(n)) for n in names}
def per_module(fn):
    out = {}
    for n in names:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter_ns()
            fn(n)
            best = min(best, time.perf_counter_ns() - t0)
        out[n] = best / 1000
    return out
spec = per_module(lambda n: imp.find_spec(n))
code = per_module(imp.get_code)
unmarshal = per_module(lambda n: marshal.loads(dumped[n]))
over = [spec[n] + code[n] - unmarshal[n] for n in names]
med = statistics.median
print(f"{med(spec.values()):.2f} {med(code.values()):.2f} {med(unmarshal.values()):.2f} "
      f"{med(over):.2f} {statistics.mean(over):.2f} {len(names)}")
"""


def micro_benchmarks():
    """The archive reader's criterion benchmarks, as a table (short runs: a summary)."""
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "-p", "pykiln-archive", "--bench", "archive", "--",
         "--warm-up-time", "1", "--measurement-time", "3", "--output-format", "bencher"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"test (.+?) \.\.\. bench:\s+([\d,]+) ns/iter \(\+/- ([\d,]+)\)", line)
        if m:
            ns, dev = (int(g.replace(",", "")) for g in m.group(2, 3))
            shown = f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{ns} ns"
            rows.append(f"| {m.group(1)} | {shown} | ± {dev / ns * 100:.0f}% |")
    return ["## Archive micro-benchmarks", "",
            "`cargo bench -p pykiln-archive` (criterion; synthetic 5,000-module archive, 1–8 KiB bytecode-like blobs):", "",
            "| benchmark | time | spread |", "| --- | ---: | ---: |", *rows, ""]


def size_of(path):
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return p.stat().st_size


def machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--python", help="CPython to embed and to make the venv with (default: what pyo3 picks)")
    ap.add_argument("--optimized-python", default="auto",
                    help="a second, optimized CPython (PGO+LTO) to embed and to make a venv with: "
                         "'auto' = /usr/bin/python3.X with its static library, 'none' = skip")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--skip-build-times", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep existing PyInstaller builds (no build times)")
    ap.add_argument("--no-profile", action="store_true", help="skip the callgrind start-up profile of the demo")
    args = ap.parse_args()
    env_build = dict(os.environ)
    if args.python:
        env_build["PYO3_PYTHON"] = args.python
    else:
        # pyo3's choice: PYO3_PYTHON, else python3 on PATH (an active venv is ignored here).
        args.python = os.environ.get("PYO3_PYTHON") or shutil.which("python3")
    CACHE.mkdir(parents=True, exist_ok=True)
    opt_py = optimized_python(args.python) if args.optimized_python == "auto" else (
        None if args.optimized_python == "none" else args.optimized_python)
    measured = {Path(shutil.which(p) or p).resolve() for p in (args.python, opt_py) if p}
    if Path(sys.executable).resolve() in measured:
        print(f"warning: the harness runs on {sys.executable}, which it also measures: the venv's PSS "
              "counts the pages it shares with the harness (run it under another Python)", file=sys.stderr)
    vpy = {server: venv(args.python, server) for server in SERVERS}
    build_vpy = {server: venv(args.python, server, [PYINSTALLER_PIN]) for server in SERVERS}
    target = ROOT / "target"

    print("building …", file=sys.stderr)
    builds = {}
    builds["pykiln-notes", "pykiln"] = cargo_build(ROOT, target, env_build)
    time_proj = time_server_project(args.python)
    builds["mcp-server-time", "pykiln"] = cargo_build(time_proj, target, env_build)
    bins = {("pykiln-notes", "pykiln"): [str(target / "release" / "pykiln-notes")],
            ("mcp-server-time", "pykiln"): [str(target / "release" / "bench-time-server")]}
    # The same servers made by the `pykiln` CLI: a prebuilt runner with the archive
    # appended. The first call may build the runner; the timed one is warm.
    sh(["cargo", "build", "--release", "--quiet", "-p", "pykiln-cli"], cwd=ROOT, env=env_build)
    cli = [str(target / "release" / "pykiln"), "build", "-q", "--python", args.python]
    cli_out = CACHE / "cli"
    cli_out.mkdir(exist_ok=True)
    cli_args = {"pykiln-notes": [str(ROOT / "examples" / "notes-server")],
                "mcp-server-time": ["--from", TIME_PIN]}
    cli_args.update({server: [str(spec["project"])] for server, spec in SERVERS.items() if "project" in spec})
    for server, what in cli_args.items():
        out = cli_out / server
        sh(cli + what + ["-o", str(out)], env=env_build)
        # Servers without a cargo build: the CLI's binary is "pykiln".
        kind = CLI if server in CARGO_SERVERS else "pykiln"
        builds[server, kind] = timed(cli + what + ["-o", str(out)], env=env_build)
        bins[server, kind] = [str(out)]
    # The same servers on pykiln's own interpreter of that minor version, when
    # `pykiln python install` has built one: the binaries that run on glibc 2.17.
    minor = subprocess.check_output([args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    text=True).strip()
    own = subprocess.run([str(target / "release" / "pykiln"), "python", "find", minor],
                         capture_output=True, text=True, env=env_build)
    if own.returncode == 0:
        own_cli = [str(target / "release" / "pykiln"), "build", "-q", "--python", own.stdout.strip()]
        for server, what in cli_args.items():
            out = cli_out / f"{server}-own-cpython"
            sh(own_cli + what + ["-o", str(out)], env=env_build)
            builds[server, PORTABLE] = timed(own_cli + what + ["-o", str(out)], env=env_build)
            bins[server, PORTABLE] = [str(out)]
    else:
        print(f"note: no pykiln-built Python {minor} (pykiln python install {minor}): no '{PORTABLE}' rows",
              file=sys.stderr)
    if opt_py:
        # The same servers embedding the optimized interpreter (own target dir: pyo3's
        # configuration differs), and a venv of it: what `uvx`-style users run.
        opt_target = ROOT / "target" / "bench-optimized"
        env_opt = dict(env_build, PYO3_PYTHON=opt_py)
        builds["pykiln-notes", OPT] = cargo_build(ROOT, opt_target, env_opt)
        builds["mcp-server-time", OPT] = cargo_build(time_proj, opt_target, env_opt)
        bins["pykiln-notes", OPT] = [str(opt_target / "release" / "pykiln-notes")]
        bins["mcp-server-time", OPT] = [str(opt_target / "release" / "bench-time-server")]
        for server, spec in SERVERS.items():
            opt_vpy = venv(opt_py, server, pip=build_vpy[server])
            bins[server, OPT_VENV] = [str(opt_vpy), "-m", spec["module"]]
    sizes = {k: size_of(v[0]) for k, v in bins.items()}
    # The same binaries with a lever turned off: the start-up prefetch; the source
    # strings compiled at build time; the file-backed native cache (every image in a
    # memfd, as before it existed); and the first start on a machine, when the cache
    # is empty and is written (a fresh one each run).
    variant_env = {}
    for server in SERVERS:
        for kind, extra in ((NO_PREFETCH, {"PYKILN_PREFETCH": "0"}),
                            (NOT_PRECOMPILED, {"PYKILN_PRECOMPILED": "off"}),
                            (IN_MEMORY, {"PYKILN_NATIVE_CACHE": "off"}), (FIRST, "fresh-cache")):
            bins[server, kind] = bins[server, "pykiln"]
            variant_env[server, kind] = extra
    for server, spec in SERVERS.items():
        bins[server, "venv"] = [str(vpy[server]), "-m", spec["module"]]
        sizes[server, "venv"] = None
        sizes[server, OPT_VENV] = None
        for onefile in (True, False):
            kind = "pyinstaller onefile" if onefile else "pyinstaller onedir"
            cmd, exe = pyinstaller(build_vpy[server], server, spec["entry"], onefile, spec["module"])
            if not (args.reuse and exe.exists()):
                builds[server, kind] = timed(cmd + ["--clean"])
            bins[server, kind] = [str(exe)]
            sizes[server, kind] = size_of(exe if onefile else exe.parent)

    edits = {}
    if not (args.skip_build_times or args.reuse):
        # A clean archive build, as PyInstaller --clean: Rust dependencies compiled and
        # pip's downloads staged (PyInstaller gets a ready venv), but no bytecode,
        # compressed-blob or baseline cache. Then a one-line edit of an app .py.
        app_py = ROOT / "examples" / "notes-server" / "src" / "pykiln_notes" / "store.py"
        original = app_py.read_text()
        fresh = Path(tempfile.mkdtemp(prefix="pykiln-bench-cache-"))
        real = Path(os.environ.get("PYKILN_CACHE_DIR") or Path.home() / ".cache" / "pykiln")
        (fresh / "site").symlink_to(real / "site")
        clean_env = dict(env_build, PYKILN_CACHE_DIR=str(fresh))
        try:
            sh(["cargo", "clean", "--release", "-p", "pykiln-notes", "--target-dir", str(target)], cwd=ROOT)
            builds["pykiln-notes", "pykiln"] = cargo_build(ROOT, target, clean_env)
            sh(["cargo", "clean", "--release", "-p", "bench-time-server", "--target-dir", str(target),
                "--manifest-path", str(time_proj / "Cargo.toml")])
            fresh2 = Path(tempfile.mkdtemp(prefix="pykiln-bench-cache-"))
            (fresh2 / "site").symlink_to(real / "site")
            builds["mcp-server-time", "pykiln"] = cargo_build(time_proj, target, dict(env_build, PYKILN_CACHE_DIR=str(fresh2)))
            shutil.rmtree(fresh2, ignore_errors=True)
            app_py.write_text(original + f"\n# bench edit {time.time()}\n")
            edits["pykiln-notes", "pykiln"] = cargo_build(ROOT, target, clean_env)
            edits["pykiln-notes", CLI] = timed(cli + cli_args["pykiln-notes"] + ["-o", str(cli_out / "pykiln-notes")],
                                               env=env_build)
            for kind, onefile in (("pyinstaller onefile", True), ("pyinstaller onedir", False)):
                sh([str(build_vpy["pykiln-notes"]), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    str(ROOT / "examples" / "notes-server")])
                cmd, _ = pyinstaller(build_vpy["pykiln-notes"], "pykiln-notes", SERVERS["pykiln-notes"]["entry"], onefile, "pykiln_notes")
                edits["pykiln-notes", kind] = timed(cmd)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
            app_py.write_text(original)
            sh([str(build_vpy["pykiln-notes"]), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                str(ROOT / "examples" / "notes-server")])
            cargo_build(ROOT, target, env_build)

    if not args.no_profile:
        # The demo with its symbol table, for the start-up profile (after the measurements).
        prof_target = ROOT / "target" / "bench-profile"
        sh(["cargo", "build", "--release", "--quiet", "--target-dir", str(prof_target)], cwd=ROOT,
           env=dict(env_build, CARGO_PROFILE_RELEASE_STRIP="none"))

    tmp = tempfile.mkdtemp(prefix="pykiln-bench-")
    env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYKILN_NOTES_DB": os.path.join(tmp, "notes.db")}
    order = list(bins)
    results = {k: [] for k in order}
    print(f"measuring {len(order)} variants × {args.runs} runs …", file=sys.stderr)
    # Each round visits the variants in another order (seeded: reproducible), so that
    # no variant always follows one that leaves the machine busy (a first start writing
    # a native cache, a onefile run extracting itself).
    shuffle = random.Random(0x9E3779B9)
    for i in range(args.runs + 1):
        shuffle.shuffle(order)
        for key in order:
            extra = variant_env.get(key, {})
            fresh = None
            if extra == "fresh-cache":
                fresh = tempfile.mkdtemp(prefix="cache-", dir=tmp)
                extra = {"XDG_CACHE_HOME": fresh}
            r = one_run(bins[key], dict(env, **extra), key[0])
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
            if i > 0:  # round 0 warms the page cache
                results[key].append(r)

    def median_memory(rs, field):
        values = [r[3][field] for r in rs if r[3][field] is not None]
        return statistics.median(values) if values else None

    def round_ratio(key, base):
        """spawn→initialize of `key` over `base`, per round (both measured within seconds
        of each other), as "median (p25–p75)": slow drifts of a shared machine cancel
        out, which a ratio of two medians over the whole run does not do."""
        rs = [a[0] / b[0] for a, b in zip(results[key], results[base])]
        q = statistics.quantiles(rs, n=4) if len(rs) > 1 else [rs[0]] * 3
        return f"{q[1]:.2f} ({q[0]:.2f}–{q[2]:.2f})"

    med = {k: [statistics.median(r[j] for r in rs) for j in range(3)]
           + [{f: median_memory(rs, f) for f in MEMORY}] for k, rs in results.items()}

    lines = [
        "# Benchmark: pykiln vs venv Python vs PyInstaller",
        "",
        f"Written by `python{sys.version_info[0]}.{sys.version_info[1]} bench/compare.py --python {args.python} "
        f"--runs {args.runs}`. Machine: {machine()}; "
        f"Python {python_tag(args.python)}. {args.runs} interleaved rounds after one warm-up, each visiting the variants in another "
        "order; medians; ×venv and ×onefile are the median of the per-round ratios and, in brackets, their "
        "interquartile range. "
        "Ratios compare variants measured in the same run; absolute times on this shared machine are noisy.",
        "",
        "*venv*: `python -m <server module>` in a venv holding only that server's dependencies (what `uvx` "
        "gives a user: a venv shared by all four servers started the demo 3–9 % slower: uvicorn "
        "imports `watchfiles` and the MCP SDK's logging `rich` when they are installed, and another server "
        "installs them); PyInstaller builds from a venv of "
        "its own (the same dependencies and PyInstaller) with `--collect-submodules <server module>`, the "
        "smallest build that passes the same MCP session. "
        "*build s*: pykiln = `cargo build --release` with the Rust dependencies already compiled and pip's "
        "packages staged, but empty bytecode, compressed-blob and baseline caches (zstd 19); PyInstaller = "
        "`--clean` from a ready venv. *one-line edit s*: append a comment to an app module, rebuild. "
        "Size of onedir is the whole directory. tools/call: `list_notes` / `get_current_time` / "
        "`count_kilns` / `add`. "
        f"*{NO_PREFETCH}*: the same binary with the start-up prefetch turned off. "
        f"*{NOT_PRECOMPILED}*: the start-up's source strings (forward references, dataclass "
        "methods) compiled at run time instead of taken from the archive. "
        f"*{IN_MEMORY}*: every native image loaded from a memfd (what pykiln did before the native "
        f"cache). *{FIRST}*: a fresh `XDG_CACHE_HOME` each run, so the images are written. "
        f"*{CLI}*: `pykiln build` of the same project (or `--from` the same pin); its build s is a warm "
        "build (runner and wheels cached), its one-line edit s the same edit rebuilt with the CLI.",
        "",
    ]
    if opt_py:
        lines += [f"*optimized CPython*: `{opt_py}` ({python_version(opt_py)}, the distribution's PGO+LTO build) "
                  f"embedded by pykiln, and a venv of it; the other rows use `{args.python}` "
                  f"({python_version(args.python)}). Build s of the optimized pykiln rows is an incremental "
                  "`cargo build` (caches warm).", ""]
    lines += [
        "Memory, summed over the process tree after tools/list, medians: *footprint* = anonymous + memfd "
        "held, what the processes pin (file-backed pages — a venv's libraries, pykiln's native cache — are "
        "shared page cache the kernel can reclaim); *peak RSS* = VmHWM; *cgroup peak* = the peak of the run's "
        "own memory cgroup (page cache included where the run first read it).",
        "",
    ]
    kinds = ("pykiln", CLI, PORTABLE, NO_PREFETCH, NOT_PRECOMPILED, IN_MEMORY, FIRST, OPT, "venv", OPT_VENV,
             "pyinstaller onefile", "pyinstaller onedir")
    for server in SERVERS:
        v = med[server, "venv"]
        one = med[server, "pyinstaller onefile"]
        lines += [
            f"## {server}",
            "",
            "| variant | spawn→initialize ms | ×venv | ×onefile | spawn→tools/list ms | tools/call ms | size MB | build s | one-line edit s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in kinds:
            if (server, kind) not in med:
                continue
            ti, tl, tc, _ = med[server, kind]
            size = sizes.get((server, kind))
            b = builds.get((server, kind))
            e = edits.get((server, kind))
            lines.append(
                f"| {kind} | {ti * 1e3:.0f} | {round_ratio((server, kind), (server, 'venv'))} | "
                f"{round_ratio((server, kind), (server, 'pyinstaller onefile'))} | {tl * 1e3:.0f} | {tc * 1e3:.1f} | "
                f"{'' if size is None else f'{size / 1e6:.1f}'} | "
                f"{'' if b is None else f'{b:.1f}'} | {'' if e is None else f'{e:.1f}'} |")
        lines += [
            "",
            "| variant | RSS MB | PSS MB | anon MB | memfd MB | footprint MB | ×venv | peak RSS MB | ×venv | cgroup peak MB | ×venv |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        vm = v[3]
        v_foot = vm["anon"] + vm["memfd"]

        def mb(x):
            return "" if x is None else f"{x / 1024:.1f}"

        def ratio(x, y):
            return "" if x is None or not y else f"{x / y:.2f}"

        for kind in kinds:
            if (server, kind) not in med:
                continue
            m = med[server, kind][3]
            foot = m["anon"] + m["memfd"]
            lines.append(
                f"| {kind} | {mb(m['rss'])} | {mb(m['pss'])} | {mb(m['anon'])} | {mb(m['memfd'])} | {mb(foot)} | "
                f"{ratio(foot, v_foot)} | {mb(m['hwm'])} | {ratio(m['hwm'], vm['hwm'])} | {mb(m['cgroup'])} | "
                f"{ratio(m['cgroup'], vm['cgroup'])} |")
        p_size, o_size = sizes[server, "pykiln"], sizes[server, "pyinstaller onefile"]
        note = f"pykiln size / onefile size: {p_size / o_size:.2f}"
        if (server, CLI) in med:
            c_size, c_init = sizes[server, CLI], med[server, CLI][0]
            note += (f"; CLI-built / cargo-built: size {c_size / p_size:.3f}, "
                     f"spawn→initialize {c_init / med[server, 'pykiln'][0]:.3f}")
        if (server, PORTABLE) in med and (server, CLI) in med:
            note += (f"; own CPython / host CPython, both CLI-built: spawn→initialize "
                     f"{med[server, PORTABLE][0] / med[server, CLI][0]:.3f}")
        if (server, OPT) in med:
            note += (f"; pykiln on the optimized CPython / a venv of it: spawn→initialize "
                     f"{med[server, OPT][0] / med[server, OPT_VENV][0]:.2f}")
        lines += ["", note, ""]
    out = subprocess.check_output(bins["pykiln-notes", "pykiln"] + ["--pykiln", "python", "-c", FINDER], text=True, env=env)
    spec_us, code_us, unmarshal_us, over_med, over_mean, n = out.split()
    lines += [
        "## Importer",
        "",
        f"Inside the packed demo, over {n} packed modules (every third; each timed as the best of 5 calls), "
        f"medians: `find_spec` {spec_us} µs; `get_code` (lookup, checksum, zstd, unmarshal, co_filename) "
        f"{code_us} µs; unmarshalling alone (`marshal.loads` of the same code) {unmarshal_us} µs. "
        f"The finder's overhead per import, find_spec + get_code − unmarshal, has a median of "
        f"**{over_med} µs** (mean {over_mean} µs: a few large modules spend longer in zstd). "
        "",
    ]
    if not args.no_profile:
        print("profiling the demo's start-up under callgrind …", file=sys.stderr)
        lines += startup_profile.profile(prof_target / "release" / "pykiln-notes")
    lines += micro_benchmarks()
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
