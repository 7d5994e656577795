"""The package's layers: no module imports one above it, and imports sit at the top of a module
unless deferring one keeps `import minicl` light (then the line says so)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minicl"

# Lowest first; a module may import only modules of earlier layers. "minicl" is the package's
# __init__ (what `import minicl` gives).
LAYERS = [
    {"kernels"},
    {"model", "tasks"},
    {"common", "plots"},
    {"config", "settings", "tracking"},
    {"rundir", "baselines"},
    {"selection"},
    {"estimators", "evaluate", "pretrained", "convert", "algorithms"},
    {"minicl", "train"},
    {"probe", "algorithm_probe"},
    {"explore", "reproduce", "compare", "mechanism"},
    {"ship", "diversity"},
]


def module_name(path: Path) -> str:
    return "minicl" if path.name == "__init__.py" else path.stem


def script_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`, where a module run with -m may import its importable self."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Compare) and getattr(test.left, "id", "") == "__name__"


def minicl_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, minicl module) for every import of the package's modules, at any depth, outside
    the script block."""
    script = {id(inner) for node in ast.walk(tree) if script_block(node) for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in script:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "minicl" else [f"minicl.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "minicl":
                found.append((node.lineno, parts[1] if len(parts) > 1 else "minicl"))
    return found


def layering_violations(package: Path, layers: list[set[str]]) -> list[str]:
    """Every import of a module from the same or a higher layer, and every module in no layer."""
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    problems = []
    for path in sorted(package.glob("*.py")):
        me = module_name(path)
        if me not in rank:
            problems.append(f"{path.name} is in no layer; add it to LAYERS")
            continue
        for line, other in minicl_imports(ast.parse(path.read_text())):
            if other in rank and other != me and rank[other] >= rank[me]:
                problems.append(
                    f"{path.name}:{line} imports minicl.{other} (layer {rank[other]}) from layer {rank[me]}"
                )
            elif other in rank and other == me and me != "minicl":
                problems.append(f"{path.name}:{line} imports itself")
    return problems


def test_no_module_imports_one_above_it():
    assert layering_violations(PACKAGE, LAYERS) == []


def test_every_layer_names_a_real_module():
    modules = {module_name(p) for p in PACKAGE.glob("*.py")}
    assert set().union(*LAYERS) == modules


def test_a_planted_circle_is_caught(tmp_path):
    (tmp_path / "model.py").write_text("import torch\n")
    (tmp_path / "tasks.py").write_text("from minicl.model import Transformer\n")
    (tmp_path / "evaluate.py").write_text("def f():\n    from minicl.train import resolve_device\n")
    (tmp_path / "train.py").write_text("from minicl.evaluate import f\n")
    problems = layering_violations(tmp_path, [{"model", "tasks"}, {"evaluate"}, {"train"}])
    assert problems == [
        "evaluate.py:2 imports minicl.train (layer 2) from layer 1",
        "tasks.py:1 imports minicl.model (layer 0) from layer 0",
    ]


def test_imports_inside_functions_say_why_they_are_deferred():
    undocumented = []
    for path in sorted(PACKAGE.glob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and "# deferred" not in lines[inner.lineno - 1]:
                        undocumented.append(f"{path.name}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert undocumented == [], "an import inside a function needs a '# deferred: why' comment on its line"


KERNELS = {"lasso_path", "prefix_least_squares"}  # baselines' numeric kernels: splitting them would hide the maths


def test_functions_are_short():
    """A long function is a story told by named steps: at most 45 lines (65 for a numeric kernel)."""
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > (65 if node.name in KERNELS else 45):
                    long.append(f"{path.name}:{node.lineno} {node.name} has {lines} lines")
    assert long == []


def test_the_library_modules_load_no_matplotlib():
    """Figures are minicl.plots', and it loads matplotlib with the first figure, not on import."""
    modules = "minicl.model, minicl.tasks, minicl.baselines, minicl.evaluate, minicl.plots"
    code = f"import sys, {modules}; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_constructions_load_neither_hydra_nor_matplotlib():
    """minicl.algorithms (the hand-built models) is for other research code: torch and minicl.model only."""
    code = "import sys, minicl.algorithms; print([m for m in ('hydra', 'omegaconf', 'matplotlib') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_only_plots_draws():
    """No module but minicl.plots names matplotlib."""
    drawing = sorted(path.name for path in PACKAGE.glob("*.py") if "matplotlib" in path.read_text())
    assert drawing == ["plots.py"]
