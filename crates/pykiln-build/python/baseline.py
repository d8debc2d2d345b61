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
and reports {"startup": [every module in sys.modules, in the order they were loaded]}:
the order in which the packed binary will ask for them at start-up.
"""
import fnmatch
import importlib.machinery  # before BlockExcluded is installed: it uses PathFinder
import json
import os
import signal
import sys

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


class Hang(BaseException):
    """Raised by the watchdog inside an import that takes too long."""


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
        __import__(job["startup"])
        report.write(json.dumps({"startup": recorder.order}) + "\n")
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
