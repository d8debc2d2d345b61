"""pykiln-build's bytecode compiler: run by the interpreter being embedded.

stdin: JSON {"jobs": [{"path", "filename", "out", "names"}]}. For each job the file at
`path` is compiled as if it lived at `filename` (a path relative to the archive root,
so no build-machine path ends up in the bytecode), and the marshalled code object is
written to `out` (temporary name, then rename). With "names": true the module's
top-level bound names are reported too (to check entry points).
stdout: one JSON object per line: {"path", "ok"} / {"path", "error", "lineno",
"compile_error"} / names. compile_error: the source is not valid Python (not an I/O error).

With {"sources": [{"mode", "flags", "optimize", "filename", "source"}], "regexes":
[{"pattern", "bytes", "flags"}]} instead (what the app's start-up compiles, as recorded
by baseline.py), each source string is compiled exactly as recorded and reported as
{"code": hex of the marshalled code object} (or {"error": ...}), one line per source,
in order; then one line for the patterns: {"seeds": hex of one marshalled list of
(flags, arguments of _sre.compile), "count"}, from which the binary fills `re`'s cache.

The marshalled bytes must not depend on what else this process compiled (the jobs are
split among processes differently from build to build): marshal writes a string as
"interned" if it is, and one-character strings are process-wide singletons that
earlier work may or may not have interned; so all 256 are interned up front. And each
code object is released before the next compile, so no string's reference count (which
decides marshal's back-references) includes another module's uses.
"""
import ast
import json
import marshal
import os
import sys
import warnings


def top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names.add(n.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
    return sorted(names)


def compile_sources(sources, out):
    # A string whose compilation warns (an invalid escape, `is` with a literal) is left
    # out: served from the archive, its warning would never be shown.
    warnings.simplefilter("error")
    for s in sources:
        try:
            code = compile(s["source"], s["filename"], s["mode"], s["flags"], True, s["optimize"])
            result = {"code": marshal.dumps(code).hex()}
            del code
        except Exception as e:  # noqa: BLE001 - a warning turned error, a syntax error
            result = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(result) + "\n")
    out.flush()


def regex_seeds(regexes, out):
    """The arguments `re` passes to `_sre.compile` for each recorded pattern, taken
    from the standard library's own compiler (so they are right for this version) and
    checked to give an equal pattern; one marshalled list of (flags, args)."""
    import _sre
    import re
    try:
        import re._compiler as compiler
    except ImportError:  # 3.10 and older
        import sre_compile as compiler
    captured = []

    class Capture:
        def __getattr__(self, name):
            return getattr(_sre, name)

        @staticmethod
        def compile(*args):
            captured.append(args)
            return _sre.compile(*args)

    warnings.simplefilter("error")  # a pattern that warns is left out, as above
    seeds = []
    compiler._sre = Capture()
    try:
        for r in regexes:
            pattern = r["pattern"].encode("latin-1") if r["bytes"] else r["pattern"]
            captured.clear()
            try:
                compiled = compiler.compile(pattern, r["flags"])
            except Exception:  # noqa: BLE001 - it raised or warned at run time too
                continue
            if len(captured) != 1 or len(captured[0]) != 6:
                continue
            # The opcodes are int subclasses (named constants): plain ints marshal.
            pattern, flags, code, groups, groupindex, indexgroup = captured[0]
            args = (pattern, int(flags), [int(op) for op in code], int(groups),
                    dict(groupindex), tuple(indexgroup))
            if _sre.compile(*args) == compiled:
                seeds.append((r["flags"], args))
    finally:
        compiler._sre = _sre
    out.write(json.dumps({"seeds": marshal.dumps(seeds).hex(), "count": len(seeds)}) + "\n")
    out.flush()


def main():
    for i in range(256):
        sys.intern(chr(i))
    job = json.load(sys.stdin)
    out = sys.stdout
    if "sources" in job or "regexes" in job:
        compile_sources(job.get("sources", []), out)
        regex_seeds(job.get("regexes", []), out)
        return
    jobs = job["jobs"]
    for job in jobs:
        path = job["path"]
        result = {"path": path}
        try:
            with open(path, "rb") as f:
                source = f.read()
            code = compile(source, job["filename"], "exec", dont_inherit=True, optimize=0)
            tmp = job["out"] + f".{os.getpid()}.tmp"
            data = marshal.dumps(code)
            del code
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, job["out"])
            if job.get("names"):
                result["names"] = top_level_names(ast.parse(source))
            result["ok"] = True
        except SyntaxError as e:
            result["error"] = f"{type(e).__name__}: {e.msg}"
            result["lineno"] = e.lineno or 0
            result["compile_error"] = True
        except ValueError as e:  # "source code string cannot contain null bytes"
            result["error"] = f"{type(e).__name__}: {e}"
            result["lineno"] = 0
            result["compile_error"] = True
        except OSError as e:
            result["error"] = f"{type(e).__name__}: {e}"
            result["lineno"] = 0
        out.write(json.dumps(result) + "\n")
    out.flush()


main()
