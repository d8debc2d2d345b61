"""pykiln-build's import baseline: which modules fail to import in a plain environment.

Run by the interpreter being embedded with the staged site-packages on sys.path.
stdin: JSON {"paths": [...], "modules": [...], "excludes": [...]}; run with -I -S so
only the stdlib and `paths` are importable, and excluded stdlib modules are blocked as
they are absent from the archive. stdout (last line): JSON
{module: "ExcType: message"} for each module whose import fails here too, so that
`--pykiln verify` can tell packaging failures from modules that never import on this
platform or without an optional dependency.
"""
import fnmatch
import json
import os
import sys

# Modules that act on import (print, open a browser): never imported to check them.
SKIP = {"this", "antigravity", "__hello__", "__phello__"}


class BlockExcluded:
    """Makes excluded standard-library modules unimportable, as in the archive."""

    def __init__(self, patterns):
        self.patterns = patterns

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if any(fnmatch.fnmatchcase(prefix, p) for p in self.patterns):
                raise ModuleNotFoundError(f"No module named {name!r} (excluded from the archive)", name=name)
        return None


def main():
    job = json.load(sys.stdin)
    sys.path[:0] = job["paths"]
    sys.meta_path.insert(0, BlockExcluded(job.get("excludes", [])))
    report = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a module prints goes to stderr, not into the report
    failures = {}
    for name in job["modules"]:
        if name in SKIP or name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            __import__(name)
        except BaseException as e:  # noqa: BLE001 - every failure is recorded
            failures[name] = f"{type(e).__name__}: {e}"
    report.write(json.dumps(failures) + "\n")
    report.flush()
    os._exit(0)  # skip interpreter teardown: imported modules may have started threads


main()
