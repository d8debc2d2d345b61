"""pykiln-build's import baseline: which modules fail to import in a plain environment.

Run by the interpreter being embedded with the staged site-packages on sys.path.
stdin: JSON {"paths": [...], "modules": [...], "stdlib_excludes": [...], "excludes":
[...], "timeout": seconds}; run with -I -S so only the stdlib and `paths` are
importable, and excluded modules are blocked as they are absent from the archive (the
stdlib patterns only for modules that do not come from `paths`). stdout: one JSON line
per event as it happens — {"start": module}, {"fail": module, "why": "ExcType: message"}
for each module whose import fails here too, and {"done": true} at the end — so that
`--pykiln verify` can tell packaging failures from modules that never import on this
platform or without an optional dependency, and so that a run killed at its ceiling
still tells what it found and which module it was stuck in.

Each import is bounded by a watchdog (SIGALRM after `timeout` seconds unwinds it): a
module that blocks at import (a bundled script that starts a server) is recorded as
"hangs on import" and the run goes on. Names that are not Python identifiers
(`tests/echo-server.py`) are scripts, not importable modules: never imported.

With {"startup": "pkg.module", "pth_imports": [...]} instead of "modules", it imports
only the app's entry module (after the `.pth` import lines, as the runtime runs them)
and reports {"startup": [every module in sys.modules, in the order they were loaded],
"sources": [...]}: the order in which the packed binary will ask for them at start-up,
and the source strings that import compiled (`compile`, `exec`/`eval` of a string:
forward references, dataclass methods…), each as {"mode", "flags", "optimize",
"filename", "source"} with everything the code object depends on resolved (the
`__future__` features inherited from the caller, the optimization level), so that
the build can compile them once and the binary skip the parser for them; likewise
"regexes": [{"pattern", "bytes", "flags"}], the patterns compiled through `re`; and
"touched": [[event, path relative to its import root], ...], the files and
directories of the app and its dependencies that the import opened, listed, loaded or
ran by path (see PathTouches), from which the build gives their distributions on-disk
views.
"""
import __future__
import builtins
import fnmatch
import importlib.machinery  # before BlockExcluded is installed: it uses PathFinder
import json
import os
import re
import signal
import sys
import types

# Modules that act on import (print, open a browser): never imported to check them.
SKIP = {"this", "antigravity", "__hello__", "__phello__"}


class BlockExcluded:
    """Makes excluded modules unimportable, as in the archive."""

    def __init__(self, stdlib_patterns, patterns, paths):
        self.stdlib_patterns = stdlib_patterns
        self.patterns = patterns
        self.paths = paths
        self.third_party = {}

    def _is_third_party(self, top):
        if top not in self.third_party:
            self.third_party[top] = importlib.machinery.PathFinder.find_spec(top, self.paths) is not None
        return self.third_party[top]

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        patterns = self.patterns
        if not self._is_third_party(parts[0]):
            patterns = patterns + self.stdlib_patterns
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if any(fnmatch.fnmatchcase(prefix, p) for p in patterns):
                raise ModuleNotFoundError(f"No module named {name!r} (excluded from the archive)", name=name)
        return None


class LoadOrder:
    """Records module names in the order the import system starts looking for them,
    which is the order a loader is asked for their code (sys.modules cannot tell: a
    module moves to its end when it finishes loading). Modules served by the frozen
    and builtin importers, which come before pykiln's, are left out."""

    def __init__(self, already):
        self.order = []
        self.seen = set()
        for name in already:
            self._add(name)

    def _add(self, name):
        if name in self.seen:
            return
        self.seen.add(name)
        if name in sys.builtin_module_names or importlib.machinery.FrozenImporter.find_spec(name):
            return
        self.order.append(name)

    def find_spec(self, name, path=None, target=None):
        self._add(name)
        return None


# The compiler flags that are `__future__` features (CPython's PyCF_MASK): the only
# ones a recorded compile may carry, and what `compile` inherits from its caller.
FUTURE_MASK = 0
for _name in __future__.all_feature_names:
    FUTURE_MASK |= getattr(__future__, _name).compiler_flag
FUTURE_MASK &= ~__future__.nested_scopes.compiler_flag  # obsolete: accepted, ignored


class CompileRecorder:
    """Replaces `compile`, `exec` and `eval` while the entry module is imported with
    wrappers that behave the same (the caller's future features and namespaces are
    passed on explicitly, as CPython takes them from the calling frame) and record
    every source string compiled to a code object."""

    MODES = ("exec", "eval", "single")

    def __init__(self):
        self.seen = {}
        self.originals = (builtins.compile, builtins.exec, builtins.eval)
        self.regexes = {}
        self.re_compile = getattr(re, "_compile", None)

    def record(self, mode, flags, optimize, filename, source):
        if type(source) is not str or type(filename) is not str or mode not in self.MODES:
            return
        if type(flags) is not int or flags & ~FUTURE_MASK or type(optimize) is not int:
            return
        if os.path.isabs(filename):
            return  # a build-machine path: the binary's own paths differ
        if optimize == -1:
            optimize = sys.flags.optimize
        try:
            source.encode(), filename.encode()  # lone surrogates: not recordable
        except UnicodeEncodeError:
            return
        key = (mode, flags, optimize, filename, source)
        self.seen.setdefault(key, {"mode": mode, "flags": flags, "optimize": optimize,
                                   "filename": filename, "source": source})

    def install(self):
        compile_, exec_, eval_ = self.originals
        record = self.record

        def compile(source, filename, mode, flags=0, dont_inherit=False, optimize=-1, *,
                    _feature_version=-1):
            if type(flags) is int and not dont_inherit:
                flags |= sys._getframe(1).f_code.co_flags & FUTURE_MASK
                dont_inherit = True
            code = compile_(source, filename, mode, flags, dont_inherit, optimize,
                            _feature_version=_feature_version)
            if _feature_version == -1 and isinstance(code, types.CodeType):
                record(mode, flags, optimize, filename, source)
            return code

        def namespaces(globals, locals):
            if globals is None:
                frame = sys._getframe(2)
                return frame.f_globals, frame.f_locals if locals is None else locals
            return globals, locals

        def exec(source, globals=None, locals=None, /, **kwargs):
            globals, locals = namespaces(globals, locals)
            if type(source) is str:
                flags = sys._getframe(1).f_code.co_flags & FUTURE_MASK
                code = compile_(source, "<string>", "exec", flags, True)
                record("exec", flags, -1, "<string>", source)
                source = code
            return exec_(source, globals, locals, **kwargs)

        def eval(source, globals=None, locals=None, /):
            globals, locals = namespaces(globals, locals)
            if type(source) is str:
                source = source.lstrip(" \t")  # as eval() strips a string
                flags = sys._getframe(1).f_code.co_flags & FUTURE_MASK
                code = compile_(source, "<string>", "eval", flags, True)
                record("eval", flags, -1, "<string>", source)
                source = code
            return eval_(source, globals, locals)

        builtins.compile, builtins.exec, builtins.eval = compile, exec, eval

        # Patterns compiled through `re`'s cache (re.compile, re.match…): the binary
        # fills that cache with them.
        re_compile, regexes = self.re_compile, self.regexes
        skip = re.DEBUG | getattr(re, "TEMPLATE", 0)

        def _compile(pattern, flags):
            key = (type(pattern), pattern, flags.value if isinstance(flags, re.RegexFlag) else flags)
            if type(pattern) in (str, bytes) and type(key[2]) is int and not key[2] & skip:
                if key not in re._cache:
                    regexes.setdefault(key, None)
            return re_compile(pattern, flags)

        if re_compile is not None and isinstance(getattr(re, "_cache", None), dict):
            re._compile = _compile

    def uninstall(self):
        builtins.compile, builtins.exec, builtins.eval = self.originals
        if self.re_compile is not None:
            re._compile = self.re_compile

    def sources(self):
        return [self.seen[k] for k in sorted(self.seen)]

    def patterns(self):
        return [
            {"pattern": p.decode("latin-1") if t is bytes else p, "bytes": t is bytes, "flags": f}
            for t, p, f in sorted(self.regexes, key=lambda k: (k[0] is bytes, k[1], k[2]))
        ]


class Hang(BaseException):
    """Raised by the watchdog inside an import that takes too long."""


class PathTouches:
    """Records the files and directories under the import roots that the import opens,
    lists, loads or runs by path, from CPython's audit events (`open`, `os.listdir`,
    `os.scandir`, `glob.glob`, `ctypes.dlopen`, `os.exec`, `os.posix_spawn`,
    `subprocess.Popen`). Left out: what the import system, `importlib.metadata` and
    `pkgutil` do themselves (the packed binary serves those without a path), reading
    `.py`/`.pyc` files, and `.dist-info` files. An audit hook cannot be removed, so it
    stops recording when told."""

    EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob", "glob.glob/2", "ctypes.dlopen",
              "os.exec", "os.posix_spawn", "subprocess.Popen"}
    SERVED = ("<frozen importlib", os.sep + "importlib" + os.sep, os.sep + "pkgutil.py",
              os.sep + "zipimport.py", os.sep + "linecache.py")

    def __init__(self, roots):
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        self.active = False
        self.touched = {}

    def hook(self, event, args):
        if not self.active or event not in self.EVENTS or not args:
            return
        path = args[0]
        if event == "subprocess.Popen" and path is None and len(args) > 1:
            argv = args[1]
            path = argv if isinstance(argv, (str, bytes)) else (argv[0] if argv else None)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str) or not path:
            return
        if path.endswith((".py", ".pyc")) or ".dist-info" in path:
            return
        absolute = os.path.realpath(path)
        root = next((r for r in self.roots if absolute.startswith(r)), None)
        if root is None:
            return
        # The nearest Python frame: C functions (the event's own) have none.
        frame = sys._getframe(1)
        if frame.f_code.co_filename.startswith(self.SERVED[0]) or any(
            s in frame.f_code.co_filename for s in self.SERVED[1:]
        ):
            return
        kind = {"os.exec": "exec", "os.posix_spawn": "exec", "subprocess.Popen": "exec",
                "glob.glob/2": "glob.glob"}.get(event, event)
        self.touched.setdefault(absolute[len(root):], kind)

    def install(self):
        sys.addaudithook(self.hook)
        self.active = True

    def uninstall(self):
        self.active = False

    def report(self):
        return sorted([kind, rel] for rel, kind in self.touched.items())


def _watchdog(signum, frame):
    raise Hang()


def import_bounded(name, timeout):
    """Import `name`; raise Hang if it takes more than `timeout` seconds."""
    signal.signal(signal.SIGALRM, _watchdog)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        __import__(name)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def importable(name):
    return all(part.isidentifier() for part in name.split("."))


def main():
    # The start-up recording runs without -I (for its fixed hash seed): `-c` put the
    # working directory first on sys.path, where nothing of the app's may come from.
    if not sys.flags.isolated and sys.path and sys.path[0] == "":
        del sys.path[0]
    job = json.load(sys.stdin)
    sys.path[:0] = job["paths"]
    sys.meta_path.insert(0, BlockExcluded(job["stdlib_excludes"], job["excludes"], job["paths"]))
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a module prints goes to stderr, not into the report
    if "startup" in job:
        recorder = LoadOrder(sys.modules)
        sys.meta_path.insert(0, recorder)
        for line in job.get("pth_imports", []):
            exec(line, {})
        compiles = CompileRecorder()
        compiles.install()
        touches = PathTouches(job["paths"])
        touches.install()
        try:
            __import__(job["startup"])
        finally:
            touches.uninstall()
            compiles.uninstall()
        report.write(json.dumps({"startup": recorder.order, "sources": compiles.sources(),
                                 "regexes": compiles.patterns(), "touched": touches.report()}) + "\n")
        report.flush()
        os._exit(0)
    timeout = job.get("timeout", 30)

    def emit(event):
        report.write(json.dumps(event) + "\n")
        report.flush()

    for name in job["modules"]:
        if name in SKIP or name.rsplit(".", 1)[-1] == "__main__" or not importable(name):
            continue
        emit({"start": name})
        try:
            import_bounded(name, timeout)
        except Hang:
            emit({"fail": name, "why": f"hangs on import (still running after {timeout:g} s)"})
        except BaseException as e:  # noqa: BLE001 - every failure is recorded
            emit({"fail": name, "why": f"{type(e).__name__}: {e}"})
    emit({"done": True})
    os._exit(0)  # skip interpreter teardown: imported modules may have started threads


main()
