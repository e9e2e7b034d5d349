"""The package's folders are its layers, and imports point down them, never back up nor in a
circle (docs/development.md, "Layout"). Read from the source with ast, so a late import inside a
function counts as much as one at the top of a file."""
import ast
import os

import fastattn

PACKAGE = os.path.dirname(os.path.abspath(fastattn.__file__))

# module or package name (its first part under fastattn) -> layer; a module may import its own
# layer or lower ones
LAYERS = {
    "_backend": 0, "_build_info": 0, "_threads": 0, "_lowp": 0, "_frozen": 0, "reference": 0, "_compiled": 0, "functional": 0,
    "io": 1, "datasets": 1, "nn": 1, "optim": 1,
    "models": 2,
    "training": 3, "inference": 3,
    "bench": 4, "cli": 4, "__main__": 4, "__init__": 4,
}


def _modules():
    """'fastattn.x.y' -> path of every .py file of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE))[:-3].split(os.sep)
                name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
                found[name] = os.path.join(root, f)
    return found


def _imports(path, modules):
    """The fastattn modules that the file at path imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "fastattn")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fastattn":
            for a in node.names:  # `from fastattn.x import y`: y may be a module of its own
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return {m for m in out if m in modules}


def _layer(name):
    parts = name.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def test_every_module_has_a_layer():
    unknown = sorted(n for n in _modules() if n != "fastattn" and n.split(".")[1] not in LAYERS)
    assert not unknown, ("modules in no layer of LAYERS (add their folder there and to 'Layout' in "
                         f"docs/development.md): {unknown}")


def test_imports_point_down():
    modules = _modules()
    up = [f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
          for name, path in modules.items() for dep in _imports(path, modules) if _layer(dep) > _layer(name)]
    assert not up, "\n".join(up)


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    state = {}  # name -> "open" while on the search path, "done" after

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
