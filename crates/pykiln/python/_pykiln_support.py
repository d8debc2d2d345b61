"""pykiln runtime support: importlib.metadata and importlib.resources over the archive.

Served by the pykiln importer itself (never from disk). The importer object is the
module's ``__loader__``; its ``_``-prefixed methods read the archive.
"""

import io
import posixpath
import sys
from importlib import metadata as _metadata

try:  # 3.11+
    from importlib.resources.abc import Traversable, TraversableResources
except ImportError:  # 3.10
    from importlib.abc import Traversable, TraversableResources


def _normalize(name):
    # PEP 503 normalisation, with '_' as dist-info directory names use it.
    out = []
    prev_sep = False
    for ch in name.lower():
        if ch in "-_.":
            if not prev_sep:
                out.append("_")
            prev_sep = True
        else:
            out.append(ch)
            prev_sep = False
    return "".join(out)


class PackedDistribution(_metadata.Distribution):
    """A distribution whose ``.dist-info`` files are packed in the archive."""

    def __init__(self, importer, dist_dir):
        self._importer = importer
        self._dist_dir = dist_dir

    def read_text(self, filename):
        data = self._importer._dist_file(self._dist_dir, str(filename))
        if data is None:
            return None
        return data.decode("utf-8")

    def locate_file(self, path):
        # Paths in RECORD are relative to site-packages, i.e. the archive root.
        return _VirtualPath(self._importer._prefix, str(path))

    def __repr__(self):
        return f"<PackedDistribution {self._dist_dir}>"


class _VirtualPath(str):
    """What ``locate_file`` returns: a path string under the executable (not on disk),
    with the few ``pathlib`` methods ``importlib.metadata`` uses on it (3.13's
    ``files()`` keeps only paths whose ``exists()`` is true, as for files on disk)."""

    def __new__(cls, root, rel):
        return super().__new__(cls, posixpath.join(root, rel))

    def exists(self):
        return __loader__._path_exists(str(self))

    def read_bytes(self):
        return __loader__.get_data(str(self))

    def read_text(self, encoding=None):
        return self.read_bytes().decode(encoding or "utf-8")

    def open(self, mode="r", encoding=None, **kwargs):
        stream = io.BytesIO(self.read_bytes())
        return stream if "b" in mode else io.TextIOWrapper(stream, encoding=encoding or "utf-8")


def find_distributions(importer, context=None):
    name = getattr(context, "name", None)
    dirs = importer._distributions()
    if name is not None:
        want = _normalize(name)
        dirs = [d for d in dirs if _normalize(d.rsplit(".", 1)[0].split("-", 1)[0]) == want]
    return iter([PackedDistribution(importer, d) for d in dirs])


class PackedPath(Traversable):
    """A file or directory of a packed package's data."""

    def __init__(self, importer, package, rel="", names=None):
        self._importer = importer
        self._package = package
        self._rel = rel.strip("/")
        # The package's file list, read once per traversal: the archive never changes,
        # and is_dir()/is_file() on each child of a listing would otherwise read it again.
        self._listing = names

    def _names(self):
        if self._listing is None:
            self._listing = self._importer._resource_names(self._package)
        return self._listing

    @property
    def name(self):
        return posixpath.basename(self._rel) if self._rel else self._package.rpartition(".")[2]

    def is_file(self):
        return bool(self._rel) and self._rel in self._names()

    def is_dir(self):
        if not self._rel:
            return True
        prefix = self._rel + "/"
        return any(n.startswith(prefix) for n in self._names())

    def iterdir(self):
        prefix = self._rel + "/" if self._rel else ""
        seen = []
        for n in self._names():
            if n.startswith(prefix):
                head = n[len(prefix):].split("/", 1)[0]
                if head not in seen:
                    seen.append(head)
        for head in seen:
            yield PackedPath(self._importer, self._package, prefix + head, self._listing)

    def joinpath(self, *descendants):
        rel = posixpath.normpath(posixpath.join(self._rel or ".", *map(str, descendants)))
        if rel == ".":
            rel = ""
        return PackedPath(self._importer, self._package, rel, self._listing)

    __truediv__ = joinpath

    def read_bytes(self):
        data = self._importer._resource_bytes(self._package, self._rel)
        if data is None:
            raise FileNotFoundError(f"{self._package}:{self._rel} is not packed")
        return data

    def read_text(self, encoding=None, errors=None):
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def open(self, mode="r", *args, **kwargs):
        if "w" in mode or "a" in mode or "+" in mode:
            raise PermissionError("packed resources are read-only")
        stream = io.BytesIO(self.read_bytes())
        if "b" in mode:
            return stream
        return io.TextIOWrapper(stream, *args, **kwargs)

    def __repr__(self):
        return f"PackedPath({self._package!r}, {self._rel!r})"

    def __eq__(self, other):
        return isinstance(other, PackedPath) and (self._package, self._rel) == (other._package, other._rel)

    def __hash__(self):
        return hash((self._package, self._rel))


class PackedResourceReader(TraversableResources):
    def __init__(self, importer, package):
        self._importer = importer
        self._package = package

    def files(self):
        return PackedPath(self._importer, self._package)


# Modules that must never be imported just to check them: they act on import.
_VERIFY_SKIP = {"this", "antigravity", "__hello__", "__phello__"}


class _Hang(BaseException):
    """Raised by verify's watchdog inside an import that takes too long."""


def _watchdog(signum, frame):
    raise _Hang()


def verify(corrupt=(), import_timeout=30.0):
    """Import every packed module; report on stdout; return the exit status.

    `corrupt` lists the (kind, key) of entries whose checksum failed: each is a FAIL
    (a module among them is not imported), whatever the baseline says. An import
    failure counts unless the module failed the same way at build time outside pykiln
    (the manifest's baseline) or only misses a module that is not packed. Each import
    is bounded by a watchdog: a module that blocks is a SKIP, "hangs on import".
    Names that are not identifiers (`tests/echo-server.py`) are scripts, not modules.
    """
    import signal

    importer = __loader__
    names = importer._module_names()
    expected = importer._expected_failures()
    failures, skipped, ok = [], [], 0
    corrupt_modules = {key for kind, key in corrupt if kind in ("module", "extension")}
    for kind, key in corrupt:
        if kind not in ("module", "extension"):
            failures.append((f"{kind} entry {key!r}", "checksum mismatch"))
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # modules that print on import must not garble the report
    previous = signal.signal(signal.SIGALRM, _watchdog)
    try:
        for name in names:
            if name in _VERIFY_SKIP or name.rsplit(".", 1)[-1] == "__main__":
                continue
            if not all(part.isidentifier() for part in name.split(".")):
                continue
            if name in corrupt_modules:
                failures.append((name, "checksum mismatch (the archive is damaged)"))
                continue
            if expected.get(name, "").startswith("does not compile on Python"):
                skipped.append((name, expected[name]))
                continue
            try:
                signal.setitimer(signal.ITIMER_REAL, import_timeout)
                try:
                    __import__(name)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                ok += 1
            except _Hang:
                skipped.append((name, f"hangs on import (still running after {import_timeout:g} s)"))
            except BaseException as e:  # noqa: BLE001 - every failure is reported
                why = f"{type(e).__name__}: {e}"
                if name in expected:
                    skipped.append((name, f"fails outside pykiln too ({expected[name]})"))
                elif isinstance(e, ModuleNotFoundError) and e.name and not importer._is_packed(e.name):
                    skipped.append((name, f"needs {e.name}, which is not packed"))
                else:
                    failures.append((name, why))
    finally:
        signal.signal(signal.SIGALRM, previous)
        sys.stdout = real_stdout
    out = sys.stdout
    for name, why in skipped:
        print(f"SKIP {name}: {why}", file=out)
    for name, why in failures:
        print(f"FAIL {name}: {why}", file=out)
    print(f"verify: {ok} imported, {len(skipped)} skipped, {len(failures)} failed", file=out)
    return 1 if failures else 0
