"""Plugin discovery by listing the package's own directory, as many MCP servers find
their `tools/` modules. Packed, this needs the package on disk (an on-disk view that
the build must choose by itself: no data file is named here)."""

import importlib
import os
from pathlib import Path

HERE = Path(__file__).parent


def discover():
    by_glob = sorted(p.stem for p in HERE.glob("*.py") if p.stem != "__init__")
    by_listdir = sorted(n[:-3] for n in os.listdir(os.path.dirname(__file__)) if n.endswith(".py") and n != "__init__.py")
    loaded = [importlib.import_module(f"{__name__}.{n}").NAME for n in by_glob]
    return [by_glob, by_listdir, loaded]
