"""One dependency order, the table in README.md's "Architecture" (read here, so the docs and
the check cannot disagree): every import in the package, at module level or inside a function,
points to its own step or an earlier one, so there is no import cycle, the core knows no layer
plugin by class, and the core never imports the DAH application or the tools.

The test reads the sources (ast), so it sees the imports a run may never reach."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = (("minicaffe", "minicaffe"), ("layers", "minicaffe.layers"), ("solver", "minicaffe.solver"))


def _readme_steps():
    """[(row name, [module or package prefix, ...]), ...] in order, from README.md's table: a
    row's ``a → b`` is two steps; parenthesised words are prose, `__init__` the package."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("| level | modules |"):].split("\n\n")[0].splitlines()[2:]
    steps = []
    for line in table:
        row, modules = [c.strip() for c in line.strip("|").split("|")]
        for part in re.sub(r"\([^)]*\)", "", modules).split("→"):
            names = re.findall(r"`([^`]+)`", part)
            steps.append((row, ["minicaffe" if n == "__init__" else "minicaffe." + n.rstrip(".*")
                                for n in names]))
    return steps


STEPS = _readme_steps()
APPLICATION = tuple(m for row, ms in STEPS if row == "application" for m in ms)
TOP = tuple(m for row, ms in STEPS if row == "top" for m in ms if m != "minicaffe")


def _step(module):
    """The index of the step that places ``module`` (the longest name that is it or a package
    above it), or None."""
    best = None
    for i, (_, names) in enumerate(STEPS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    return best and best[0]


def _modules():
    mods = {}
    for folder, pkg in PACKAGES:
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), base)[:-3].replace(os.sep, ".")
                    name = pkg if rel == "__init__" else pkg + "." + rel.replace(".__init__", "")
                    mods[name] = os.path.join(dirpath, f)
    return mods


def _imports(mods):
    """{module: {module it imports (of ours)}}; ``from pkg import sub`` is an edge to the
    submodule, ``from pkg import name`` to the package."""
    edges = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        here = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for a in node.names:
                    sub = base + "." + a.name
                    out.add(sub if sub in mods else base)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        edges[name] = {m for m in out if m in mods and m != name}
    return edges


def _cycles(edges):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _kind(m):
    if m == "minicaffe" or m.startswith(TOP):
        return "top"
    if m.startswith(APPLICATION):
        return "application"
    if m.startswith("minicaffe.layers"):
        return "plugin"
    return "core"


MODS = _modules()
EDGES = _imports(MODS)


def test_the_walk_finds_the_package():
    assert {"minicaffe.net", "minicaffe.layers.dah", "minicaffe.solver.updates", "minicaffe.backend",
            "minicaffe.commands.train", "minicaffe.dah.figures"} <= set(MODS)
    assert "minicaffe.layer" in EDGES["minicaffe.layers.common"]
    assert "minicaffe.protoio" in EDGES["minicaffe.io"]   # a function-level import counts too


def test_the_readme_table_is_read():
    assert STEPS[0] == ("base", ["minicaffe.errors", "minicaffe.proto", "minicaffe.glog"])
    assert _step("minicaffe.layer") < _step("minicaffe.layers.vision") < _step("minicaffe.net")
    assert _step("minicaffe.net") < _step("minicaffe.solver.updates")
    assert "minicaffe.dah" in APPLICATION and TOP == ("minicaffe.pycaffe", "minicaffe.commands")
    assert _step("minicaffe") == len(STEPS) - 1 and _step("numpy") is None


def test_the_table_places_every_module():
    assert sorted(m for m in MODS if _step(m) is None) == []


def test_no_import_points_forward():
    bad = sorted("%s -> %s" % (a, b) for a, bs in EDGES.items() for b in bs
                 if _step(b) > _step(a))
    assert bad == []


def test_no_import_cycle():
    assert _cycles(EDGES) == []


def test_the_cycle_finder_finds_one():   # the test above can fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_imports_no_plugin_application_or_tool():
    bad = sorted("%s -> %s" % (a, b) for a, bs in EDGES.items() for b in bs
                 if _kind(a) == "core" and _kind(b) != "core")
    assert bad == []


def test_plugins_and_application_do_not_import_the_tools():
    bad = sorted("%s -> %s" % (a, b) for a, bs in EDGES.items() for b in bs
                 if _kind(a) in ("plugin", "application") and _kind(b) == "top")
    assert bad == []
