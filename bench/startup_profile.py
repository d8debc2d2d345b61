#!/usr/bin/env python3
"""Where a packed server's start-up goes: spawn → initialize response under callgrind.

    python3 bench/startup_profile.py BINARY [--runs-out DIR]

BINARY should keep its symbol table (the bench builds the demo with
CARGO_PROFILE_RELEASE_STRIP=none). Runs it once to fill the native cache, then once
under `valgrind --tool=callgrind`, sends `initialize`, waits for the answer and closes
stdin. Every instruction executed (all threads, user space only: page faults, memfd
writes and other kernel work are not counted) is attributed to the function that
executed it, and functions are grouped into the parts of start-up: interpreter
initialisation, the importer, unmarshalling, decompression, native loading (the
dynamic linker), extension modules' own code, and executing module bodies. Prints a
markdown section (compare.py puts it in RESULTS.md).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "profile", "version": "0"}}}

# Unmarshalling: CPython's marshal.c.
MARSHAL = re.compile(r"^(r_[a-zA-Z_]+|read_object|PyMarshal_\w+|marshal_loads\w*|_PyMarshal\w*)$")
# zstd (the archive's codec).
ZSTD = re.compile(r"^(ZSTD_|HUF_|FSE_|ZSTDv|HIST_|ERR_)")
# The interpreter's start: functions whose inclusive cost is initialisation.
INIT_FNS = ("Py_InitializeFromConfig", "_Py_InitializeMain")


def parse(path):
    """Self cost (Ir) per (object, function), and the cost of calls made by each
    function (to derive inclusive costs)."""
    names = {"ob": {}, "fn": {}, "cob": {}, "cfn": {}}
    self_cost = defaultdict(int)
    call_cost = defaultdict(int)
    ob = fn = None
    in_call = False

    def name(kind, value):
        # Compressed names: "(id) name" defines, "(id)" refers.
        table = names["ob" if kind in ("ob", "cob") else "fn"]
        m = re.match(r"\((\d+)\)\s*(.*)", value)
        if not m:
            return value
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), value)

    for line in Path(path).read_text(errors="replace").splitlines():
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            cost = int(line.split()[-1]) if len(line.split()) > 1 else 0
            if in_call:
                call_cost[(ob, fn)] += cost
                in_call = False
            else:
                self_cost[(ob, fn)] += cost
            continue
        key, _, value = line.partition("=")
        if key == "ob":
            ob = name("ob", value)
        elif key == "fn":
            # Recursion cycles are named f'2, f'3…: the same function.
            fn = re.sub(r"'\d+$", "", name("fn", value))
        elif key in ("cob", "cfn"):
            name(key, value)
        elif key == "calls":
            in_call = True
    return self_cost, call_cost


def bucket(ob, fn, exe):
    ob = ob or ""
    fn = fn or ""
    if "ld-linux" in ob or fn.startswith(("_dl_", "dl_", "do_lookup_x", "check_match")):
        return "native loading (ld.so: mapping, relocations, symbol lookup)"
    if ob.startswith(("/memfd:", "/proc/self/fd")) or "/pykiln/native/" in ob:
        return "extension modules' own code (module init, e.g. pydantic-core's)"
    if "libc.so" in ob or "libm.so" in ob:
        if fn.startswith(("__memcpy", "__memmove", "memcpy", "memmove", "__memset", "memset")):
            return "libc: memcpy/memset"
        if "malloc" in fn or "free" in fn or fn.startswith(("_int_", "sysmalloc", "tcache")):
            return "libc: malloc/free"
        return "libc: other"
    if ZSTD.match(fn):
        return "zstd decompression"
    if MARSHAL.match(fn):
        return "unmarshalling bytecode"
    if fn.startswith(("sha2::", "<sha2::")) or "sha256" in fn.lower():
        return "SHA-256 check of cached native images"
    if "pykiln" in fn or "xxh3" in fn or "xxhash" in fn or fn.startswith(("pyo3::", "<pyo3")):
        return "pykiln runtime (importer, checksums, archive)"
    if ob and Path(ob).name != Path(exe).name and not ob.endswith(Path(exe).name):
        return "other libraries"
    if fn.startswith(("gc_", "deduce_unreachable", "move_unreachable", "visit_", "subtract_refs", "update_refs")):
        return "Python: cyclic GC"
    if fn.startswith(("_PyObject_Malloc", "_PyObject_Free", "pymalloc", "_PyObject_Realloc", "PyObject_Malloc",
                      "PyObject_Free", "_PyMem_", "PyMem_")) or "obmalloc" in fn:
        return "Python: object allocator"
    if fn.startswith(("type_", "PyType_", "update_", "slot", "_PyType_", "mro_", "add_", "inherit_",
                      "fixup_slot", "resolve_slotdups", "super_", "best_base", "solid_base")):
        return "Python: class creation (type objects, slots, MRO)"
    return "Python: executing module bodies (eval loop, objects, dicts, strings…)"


def profile(binary, env=None, workdir=None):
    binary = str(Path(binary).resolve())
    work = Path(workdir or tempfile.mkdtemp(prefix="pykiln-profile-"))
    env = dict(env or {}, PATH="/usr/bin:/bin", HOME=str(work), PYKILN_NOTES_DB=str(work / "notes.db"))
    req = (json.dumps(INIT) + "\n").encode()
    # Fill the native cache first: the profile is of an ordinary (not first) start.
    subprocess.run([binary], input=req, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, timeout=120)
    out = work / "callgrind.out"
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet",
                             "--trace-children=no", binary],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    proc.stdin.write(req)
    proc.stdin.flush()
    first = proc.stdout.readline()
    assert b'"id":1' in first.replace(b" ", b""), first[:200]
    proc.stdin.close()
    proc.wait(timeout=600)
    self_cost, call_cost = parse(out)
    total = sum(self_cost.values())
    groups = defaultdict(int)
    for (ob, fn), cost in self_cost.items():
        groups[bucket(ob, fn, binary)] += cost
    init = sum(self_cost[k] + call_cost[k] for k in self_cost if k[1] in INIT_FNS)
    top = sorted(self_cost.items(), key=lambda kv: -kv[1])[:12]
    lines = [
        "## Start-up profile (demo, callgrind)",
        "",
        f"`python3 bench/startup_profile.py` on the demo built with its symbol table: one start, spawn → initialize "
        f"response, then stdin closed (so shutdown is included), native cache warm. {total / 1e6:,.0f} M "
        "instructions in user space, all threads (the prefetch thread's included), attributed to the function "
        "that executed them. Kernel work (page faults, mmap, memfd writes) is not counted.",
        "",
        "| part of start-up | instructions (M) | share |",
        "| --- | ---: | ---: |",
    ]
    for name, cost in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {cost / 1e6:,.1f} | {cost / total * 100:.1f} % |")
    lines += [
        "",
        f"Interpreter initialisation (inclusive: `Py_InitializeFromConfig` + `_Py_InitializeMain`, which import "
        f"`encodings` and the rest of the core through the importer): {init / 1e6:,.1f} M, {init / total * 100:.1f} %.",
        "",
        "Read the SHA-256 row with care: valgrind hides the CPU's SHA extensions, so the `sha2` crate runs its "
        "software rounds here; natively it uses the SHA instructions (SHA-NI) where the CPU has them, about "
        "1.4 GB/s on this machine, i.e. ~20 ms for the demo's ~25 MB of native images, on the prefetch thread.",
        "",
        "Top functions by own instructions: " + "; ".join(
            f"`{(fn or '?')[:60]}` {cost / total * 100:.1f} %" for (ob, fn), cost in top) + ".",
        "",
    ]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    args = ap.parse_args()
    print("\n".join(profile(args.binary)))


if __name__ == "__main__":
    sys.exit(main())
