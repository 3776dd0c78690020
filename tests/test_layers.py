"""The package's architecture, checked: data flows one way, from the formats up to the notebooks.

Each module of kquant sits in one layer; a module may import from its own layer and the
layers below it, never from a layer above. So a GGUF reader cannot reach for the mix
rules, the codecs cannot reach for the oracle, and the notebooks' helpers can use
everything. The imports are read from the source (function-level ones included), so a
lazy import cannot hide an upward dependency. Also checked: no import cycles, no
``_private`` name imported from another module, every module placed in a layer, and the
README's layout table naming every module.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kquant"

# Lowest first. A module belongs to the first entry that is it or a package above it.
LAYERS = [
    # 0. No kquant imports but these: errors, the C arithmetic and one module per block format,
    #    and the thin doors to the outside (llama.cpp's bindings, Colab, a progress bar).
    (
        "foundation",
        ["kquant.errors", "kquant.formats", "kquant.llamacpp", "kquant.colab", "kquant.progress", "kquant.blas"],
    ),
    # 1. GGUF files: the one reader, the one atomic writer, the byte-by-byte anatomy, summaries.
    ("gguf", ["kquant.gguf"]),
    # 2. Importance matrices as data: statistics and llama.cpp's file formats.
    ("imatrix", ["kquant.imatrix"]),
    # 3. Whole files: llama.cpp's mix rules and quantize_gguf; ``import kquant`` offers them.
    ("whole files", ["kquant.mixes", "kquant.quantize_file", "kquant"]),
    # 4. The oracle: llama.cpp's own encoders and whole-file quantizer, to check all of the above.
    ("oracle", ["kquant.reference"]),
    # 5. The model: corpus, tokenizer, export, numpy forward pass, llama.cpp runner, scores.
    ("model", ["kquant.model"]),
    # 5b. Methods beyond round-to-nearest (GPTQ, AWQ, bit budgets, QLoRA): they need the model's
    #     activations or gradients and write files through the whole-file layer.
    ("methods", ["kquant.methods"]),
    # 6. What only the notebooks need: small lesson modules and the plots.
    ("lessons", ["kquant.lessons", "kquant.viz"]),
    # 7. What a person runs: exercises, the command line, the demo, the self-test.
    ("apps", ["kquant.exercises", "kquant.__main__", "kquant.demo", "kquant.selftest"]),
]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best[0]


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported kquant module, names taken from it, line) for every import in ``module``, lazy ones too."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "kquant"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "kquant":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:  # "from kquant.model import corpus" imports the module kquant.model.corpus
                    out.append((sub, [], node.lineno))
                else:
                    out.append((base, [a.name], node.lineno))
    return out


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module):
    mine = layer_of(module)
    for target, _names, line in imports(module):
        theirs = layer_of(target)
        assert theirs <= mine, (
            f"{module} (layer {LAYERS[mine][0]!r}) imports {target} (layer {LAYERS[theirs][0]!r}) at line {line}: "
            "data flows one way; move the shared piece down, or the caller up"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_from_another_module(module):
    for target, names, line in imports(module):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{module} imports {private} from {target} at line {line}: make it public or move it"


def test_there_are_no_import_cycles():
    graph = {m: {t for t, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    # A package's __init__ that re-exports its own submodules is not a cycle with them.
    for m, targets in graph.items():
        graph[m] = {t for t in targets if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_package_never_imports_notebook_or_test_code():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in ("scripts", "notebooks", "tests", "benchmarks")]
            assert not bad, f"{module} imports {bad}: notebooks and tests use the package, never the other way"


def test_the_readme_layout_table_names_every_module():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(kquant/[\w/]+\.py)`", layout)) | {
        f"{folder}{name}.py"
        for folder, names in re.findall(r"`(kquant/[\w/]*/)`[^|]*\|([^\n]*)", layout)
        for name in re.findall(r"`(\w+)\.py`", names)
    }
    # A package's __init__.py is named by its folder's row.
    files = [str(p.relative_to(ROOT)) for p in MODULES.values() if p.name != "__init__.py" or p.parent == PACKAGE]
    missing = [f for f in files if f not in named]
    assert not missing, f"README's layout table does not name {missing}: give each module its one-line purpose"


def test_import_kquant_loads_only_the_layers_it_offers():
    """``import kquant`` gives the codecs and whole-file quantization, and loads nothing above them."""
    import subprocess
    import sys

    code = "import sys, kquant; print('\\n'.join(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    above = [m for m in loaded if m.split(".")[0] == "kquant" and layer_of(m) > layer_of("kquant")]
    assert not above, f"import kquant loads {above}: keep the facade to the whole-file layer"
    assert "llama_cpp" not in loaded and "matplotlib" not in loaded, "import kquant must stay light"
