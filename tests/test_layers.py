"""The package's layers, kept by reading every module's imports (ast): which layer may import
which, core free of TensorFlow, the command-line plumbing imported by entry points only, the
study imported by nobody, no import cycle, no module over 450 lines."""

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mobile_pirl_tf"
LAYERS = ("core", "data", "models", "training", "evaluation", "deployment", "study")
# layer -> the layers it may import (itself included).
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "models": {"core", "models"},
    "training": {"core", "data", "models", "training"},
    "evaluation": {"core", "data", "models", "evaluation"},
    "deployment": {"core", "data", "models", "evaluation", "deployment"},
    "study": set(LAYERS),
}
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization",
              "tensorflow_datasets", "ai_edge_litert")
CLI = f"{PACKAGE}.core.cli"
MAX_LINES = 450


def python_files():
    """Every .py file of the package, the entry points and the benchmarks (relative paths)."""
    out = []
    for top in (PACKAGE, "export", "benchmarks"):
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            out += [os.path.relpath(os.path.join(folder, n), REPO) for n in names
                    if n.endswith(".py")]
    return sorted(out + ["train.py", "evaluate.py"])


def module_name(path):
    return path[:-3].replace(os.sep, ".").removesuffix(".__init__")


def is_entry_point(path):
    return not path.startswith(PACKAGE + os.sep) or os.path.basename(path) == "__main__.py"


def layer_of(module):
    """The layer of a package module ("core", ...), "" for the package root, None outside."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else ""


def imports(path):
    """[(line, imported module)] of a file: `import a.b` gives a.b; `from a import b` gives a.b
    when a.b is a module of the package, else a."""
    tree = ast.parse(open(os.path.join(REPO, path)).read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                as_path = os.path.join(REPO, *candidate.split("."))
                is_module = os.path.exists(as_path + ".py") or os.path.isdir(as_path)
                out.append((node.lineno, candidate if is_module else node.module))
    return out


def violations(path):
    """The broken rules of one file, as 'file:line: rule' lines."""
    out = []
    own = layer_of(module_name(path)) if path.startswith(PACKAGE) else None
    entry = is_entry_point(path)
    for line, module in imports(path):
        where = f"{path}:{line}: imports {module}"
        target = layer_of(module)
        top = module.split(".")[0]
        if own == "core" and top in FRAMEWORKS:
            out.append(f"{where}: core imports no framework (it must answer --help at once)")
        if module.startswith(CLI) and not entry:
            out.append(f"{where}: only entry points (train.py, evaluate.py, export/, "
                       "benchmarks/, a __main__) import the command-line plumbing")
        if own and target == "":
            out.append(f"{where}: import from the layer's module, not the package root")
        if own and target and target not in ALLOWED[own] and not entry:
            out.append(f"{where}: layer {own} may import only "
                       f"{', '.join(sorted(ALLOWED[own]))}")
        if target == "study" and own != "study" and not path.startswith("benchmarks"):
            out.append(f"{where}: nothing imports the study but itself")
    return out


def test_every_module_keeps_the_layer_rules():
    problems = [v for path in python_files() for v in violations(path)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("planted, rule", [
    ("from mobile_pirl_tf.evaluation import probes\n", "layer training may import only"),
    ("import tensorflow as tf\n", "core imports no framework"),
    ("from mobile_pirl_tf.core import cli\n", "only entry points"),
    ("from mobile_pirl_tf.study import stats\n", "nothing imports the study"),
])
def test_a_planted_forbidden_import_is_named_with_its_file_line_and_rule(
        planted, rule, tmp_path, monkeypatch):
    """Plants an import into a copy of a module and checks the rule names it."""
    target = {"layer training": "training/fit.py", "core imports": "core/config.py",
              "only entry": "models/pirl.py", "nothing imports": "evaluation/probes.py"}
    name = next(v for k, v in target.items() if rule.startswith(k))
    fake_repo = tmp_path / "repo"
    source = os.path.join(REPO, PACKAGE, name)
    planted_file = fake_repo / PACKAGE / name
    planted_file.parent.mkdir(parents=True)
    for layer in LAYERS:  # the package's folders, so `from a import b` resolves modules
        os.makedirs(fake_repo / PACKAGE / layer, exist_ok=True)
    for module in ("evaluation/probes.py", "core/cli.py", "study/stats.py"):
        (fake_repo / PACKAGE / module).write_text("")
    text = open(source).read()
    planted_file.write_text(planted + text)
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(fake_repo))
    found = violations(os.path.join(PACKAGE, name))
    assert any(rule in v and v.startswith(f"{PACKAGE}/{name}:1:") for v in found), found


def test_no_import_cycle_between_the_package_modules():
    graph = {}
    for path in python_files():
        if path.startswith(PACKAGE):
            graph[module_name(path)] = {m for _, m in imports(path)
                                        if m.startswith(PACKAGE + ".")}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            nxt = nxt if nxt in graph else nxt.rsplit(".", 1)[0]
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt in graph and nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])


def test_no_module_is_over_450_lines():
    long = [f"{p}: {n} lines" for p in python_files()
            if (n := len(open(os.path.join(REPO, p)).read().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)
