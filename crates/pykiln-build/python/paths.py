"""pykiln-build's path-use analysis: which modules reach their own directory by path.

Run by the interpreter being embedded, with Python's own parser (`ast`). A packed
module's `__file__` names nothing on disk unless its distribution gets an on-disk view.
Distributions that ship data files get one by default; this finds the code-only ones
that still need it: a module that lists the directory it lives in (plugin discovery:
`os.listdir(os.path.dirname(__file__))`, `Path(__file__).parent.glob("*.py")`) or opens
a file by a path built from its location.

A path is "located" when the expression that builds it mentions `__file__`, `__path__`
or `__spec__`, or a name (or `self.` attribute) assigned from such an expression,
followed through any number of assignments in the module (scopes are not told apart:
a false positive costs a view, a false negative a server that fails). Code in a
top-level `if __name__ == "__main__":` block runs only as a script and is ignored.

stdin: JSON {"files": [[key, path], ...]}. stdout: one JSON line {"findings": {key:
[[line, what, whose], ...]}}: for each module that has any, its first finding per
location it reaches: `what` is "lists its own directory" or "opens a file by a path
built from __file__"; `whose` is "" for the module's own location, else the dotted name
of the imported module whose `__file__` the path was built from. A file that does not
parse has no finding (the compiler reports it).
"""
import ast
import json
import sys

LOCATION = {"__file__", "__path__", "__spec__"}
# Functions whose first argument is a directory they list (pkgutil's: a list of them).
LISTING_FUNCTIONS = {"listdir", "scandir", "walk", "fwalk", "glob", "iglob", "iter_modules", "walk_packages"}
# Methods that list the directory they are called on (pathlib).
LISTING_METHODS = {"iterdir", "glob", "rglob", "walk"}
# Functions whose first argument is a file they open.
OPENING_FUNCTIONS = {"open", "CDLL", "LoadLibrary", "PyDLL", "load_library"}
# Methods that open the file they are called on (pathlib).
OPENING_METHODS = {"open", "read_text", "read_bytes"}
# Module names through which a listing or opening function is called (`os.listdir`):
# `x.glob(...)` on anything else is a method call on a path.
FUNCTION_MODULES = {"os", "glob", "io", "codecs", "ctypes", "cdll", "pydll", "np", "numpy", "ctypeslib", "pkgutil"}


def is_main_block(node):
    if not isinstance(node, ast.If):
        return False
    t = node.test
    if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
        return False
    sides = [t.left, t.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]


class Located:
    """The names and `self.` attributes that stand for a path built from a module's
    location, each with whose: "" for this module's own (`__file__`), else the dotted
    name of the imported module whose `__file__`/`__path__` it was built from
    (`os.path.dirname(plugins.__file__)`)."""

    def __init__(self, tree):
        self.imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self.imported[a.asname] = a.name
                    else:
                        top = a.name.split(".")[0]
                        self.imported[top] = top
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    self.imported[a.asname or a.name] = f"{node.module}.{a.name}"
        self.names = {}
        self.attrs = {}
        assigns = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                assigns.append((node.targets, node.value))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                assigns.append(([node.target], node.value))
            elif isinstance(node, ast.NamedExpr):
                assigns.append(([node.target], node.value))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        assigns.append(([item.optional_vars], item.context_expr))
        changed = True
        while changed:
            changed = False
            for targets, value in assigns:
                whose = self.whose(value)
                if not whose:
                    continue
                for target in targets:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Name):
                            table, key = self.names, t.id
                        elif (
                            isinstance(t, ast.Attribute)
                            and isinstance(t.value, ast.Name)
                            and t.value.id in ("self", "cls")
                        ):
                            table, key = self.attrs, t.attr
                        else:
                            continue
                        known = table.setdefault(key, set())
                        if not whose <= known:
                            known |= whose
                            changed = True

    def whose(self, expr):
        """Whose location `expr` is built from (empty: none)."""
        out = set()
        for n in ast.walk(expr):
            if isinstance(n, ast.Name):
                if n.id in LOCATION:
                    out.add("")
                out |= self.names.get(n.id, set())
            elif isinstance(n, ast.Attribute):
                if n.attr in LOCATION:
                    if isinstance(n.value, ast.Name) and n.value.id in self.imported:
                        out.add(self.imported[n.value.id])
                    elif isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                        out.add("")
                    # `x.__file__` of anything else (a module object passed in, the
                    # module of an object): not known here.
                elif isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                    out |= self.attrs.get(n.attr, set())
        return out


def callee(call):
    """(module-ish name or None, function or method name, receiver or None)."""
    f = call.func
    if isinstance(f, ast.Name):
        return None, f.id, None
    if isinstance(f, ast.Attribute):
        if isinstance(f.value, ast.Name) and f.value.id in FUNCTION_MODULES:
            return f.value.id, f.attr, None
        if isinstance(f.value, ast.Attribute) and f.value.attr in FUNCTION_MODULES:
            return f.value.attr, f.attr, None
        return None, f.attr, f.value
    return None, None, None


def first_argument(call, *keywords):
    if call.args:
        return call.args[0]
    for k in call.keywords:
        if k.arg in keywords:
            return k.value
    return None


def findings(tree):
    """[(line, what, whose)] of a module, first per whose."""
    body = [n for n in tree.body if not is_main_block(n)]
    module = ast.Module(body=body, type_ignores=[])
    located = Located(module)
    found = []
    for node in ast.walk(module):
        if not isinstance(node, ast.Call):
            continue
        _, name, receiver = callee(node)
        if name is None:
            continue
        if receiver is None:
            arg = first_argument(node, "path", "top", "pathname", "file", "name")
            # glob(pattern, root_dir=...): the directory may be either.
            args = [a for a in [arg] + [k.value for k in node.keywords if k.arg == "root_dir"] if a is not None]
            whose = set().union(*(located.whose(a) for a in args)) if args else set()
            if name in LISTING_FUNCTIONS and whose:
                found += [(node.lineno, "lists its own directory", w) for w in whose]
            elif name in OPENING_FUNCTIONS and arg is not None and located.whose(arg):
                found += [(node.lineno, OPENS, w) for w in located.whose(arg)]
        else:
            whose = located.whose(receiver)
            if name in LISTING_METHODS and whose:
                found += [(node.lineno, "lists its own directory", w) for w in whose]
            elif name in OPENING_METHODS and whose:
                found += [(node.lineno, OPENS, w) for w in whose]
    # A listing explains more than an opening: reported first if there is one.
    found.sort(key=lambda f: (f[2], f[1] != "lists its own directory", f[0]))
    first = {}
    for line, what, whose in found:
        first.setdefault(whose, (line, what, whose))
    return sorted(first.values(), key=lambda f: f[2])


OPENS = "opens a file by a path built from __file__"


def main():
    job = json.load(sys.stdin)
    out = {}
    for key, path in job["files"]:
        try:
            with open(path, "rb") as f:
                tree = ast.parse(f.read(), path)
        except (SyntaxError, ValueError, OSError):
            continue
        found = findings(tree)
        if found:
            out[key] = [list(f) for f in found]
    print(json.dumps({"findings": out}))


if __name__ == "__main__":
    main()
