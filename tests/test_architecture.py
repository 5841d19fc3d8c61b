"""The house rules, checked: no private names across modules, no import cycles, Devito stays
behind timeprobe.compat, and the PyTorch side imports without Devito."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "timeprobe"


def _python_sources():
    for folder in ("timeprobe", "scripts", "models"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def _notebook_sources():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        # drop IPython magics, which are not Python
        yield nb, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree, module):
    """(imported module, [names]) for every import in ``tree`` (relative imports resolved)."""
    package = module.rsplit(".", 1)[0] if not module.endswith("__init__") else module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                is_pkg = False
                base = base[:len(base) - node.level] if not is_pkg else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def _private_imports(tree, module):
    bad = []
    for target, names in _imports(tree, module):
        for n in names:
            if n.startswith("_") and not n.startswith("__"):
                bad.append(f"{module}: from {target} import {n}")
    return bad


def test_no_private_names_imported_across_modules():
    bad = []
    for path in _python_sources():
        mod = _module_name(path)
        if path.name == "__init__.py":
            mod = mod + ".__init__"
        bad += _private_imports(ast.parse(path.read_text()), mod)
    for nb, code in _notebook_sources():
        bad += _private_imports(ast.parse(code), nb.stem)
    assert not bad, "\n".join(bad)


def _package_graph():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = _module_name(path)
        key = mod + ".__init__" if path.name == "__init__.py" else mod
        deps = set()
        for target, names in _imports(ast.parse(path.read_text()), key):
            if not target or not target.startswith("timeprobe"):
                continue
            deps.add(target)
            deps.update(f"{target}.{n}" for n in names)  # `from . import module`
        graph[mod] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycles():
    graph = _package_graph()
    assert "timeprobe.propagators" in graph and graph["timeprobe.objectives"]
    state = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph[m]):
            if d.startswith(m + "."):  # a package importing its own submodules is not a cycle
                continue
            if state.get(d) == 1 and not m.startswith(d + "."):
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_devito_private_attributes_only_in_compat():
    """Devito's private attributes (``._data``, ``._allocator``, …) are touched in compat.py alone."""
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("_data", "_allocator", "_default_value",
                                                                 "_data_buffer", "_data_with_outhalo"):
                bad.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("devito.data"):
                bad.append(f"{path.name}:{node.lineno} from {node.module}")
    assert not bad, "\n".join(bad)


_NO_DEVITO = """
import sys
for name in ("devito", "matplotlib", "h5py", "segyio", "sympy"):
    sys.modules[name] = None  # importing any of them now fails
import timeprobe, timeprobe.xconv
from timeprobe.xconv import Xconv2D
import torch
layer = Xconv2D(2, 3, 3, padding=1, ps=2)
layer(torch.zeros(1, 2, 5, 5)).sum().backward()
m = timeprobe.Model(vp=[[1.5, 1.5], [1.5, 1.5]], spacing=10.0)
try:
    timeprobe.forward
except ImportError as e:
    print("ERROR:", e)
"""


def test_xconv_and_model_import_without_devito():
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", _NO_DEVITO], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "needs Devito" in out.stdout and "timeprobe[seismic]" in out.stdout, out.stdout
