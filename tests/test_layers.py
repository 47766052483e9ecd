"""The package's layers: each module imports FinReason modules of its own layer or the ones below,
at the top of the file, so a reader (and this test) sees which layer depends on which.

A new module must be placed in ``LAYERS``; an import of a module from a higher layer, or a
FinReason import inside a function (which hides the dependency and can hide a cycle), fails here.
Heavy third-party packages (torch, transformers, TRL, vLLM, llama.cpp, Streamlit) may still be
imported lazily: this test looks only at imports of ``finreason`` modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "finreason"

# lowest first; a module may import modules of its own layer and of the layers before it
LAYERS = (
    # foundations: errors, files, the outputs layout, numbers, programs, the machine's measures;
    # nothing here knows about configs, data or models
    ("errors", "layout", "storage", "console", "stats", "programs", "equivalence", "hub", "throughput", "memory",
     "measure", "outputlock", "uploads", "gguf_files", "offline_tokenizers", "llama_cpp_source", "training_record",
     "generation", "document_facts", "retriever_labels"),
    # settings, data, scoring and loading: what every stage reads
    ("configuration", "data", "scoring", "rewards", "questions", "scorefile", "models", "random_models", "ranker_features"),
    # evidence and prompts: the fact ranker, what goes into a prompt, and what produced a result
    ("retrieval", "prompts", "provenance", "trainset", "precision"),
    # the stages: the difficulty filter, evaluation and training
    ("difficulty", "evaluation", "training", "epoch_choice"),
    # what is built on the stages: analysis, the memory probe, export, reports, the app's model choice
    ("analysis", "probe", "export", "report", "serving"),
    # end to end: the rehearsal drives every script
    ("rehearsal",),
)
LAYER_OF = {module: index for index, layer in enumerate(LAYERS) for module in layer}


def finreason_imports(source: str) -> list[tuple[str, bool]]:
    """(imported FinReason module, whether the import sits inside a function or class) for each."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.ImportFrom) and child.module == "finreason":
                found.extend((alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("finreason."):
                found.append((child.module.split(".")[1], inside))
            elif isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[1], inside) for alias in child.names if alias.name.startswith("finreason."))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def violations(module: str, source: str) -> list[str]:
    """What breaks the layering in ``module``'s ``source``: upward, unplaced and nested imports."""
    problems = []
    for imported, nested in finreason_imports(source):
        if imported == module:
            continue
        if imported not in LAYER_OF:
            problems.append(f"{module} imports {imported}, which is in no layer")
        elif LAYER_OF[imported] > LAYER_OF[module]:
            problems.append(f"{module} (layer {LAYER_OF[module]}) imports {imported} from layer {LAYER_OF[imported]} above it")
        if nested:
            problems.append(f"{module} imports {imported} inside a function: move it to the top of the file")
    return problems


def package_modules() -> list[str]:
    return sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def test_every_module_is_in_exactly_one_layer():
    placed = [module for layer in LAYERS for module in layer]
    assert sorted(placed) == sorted(set(placed)), "a module is in two layers"
    assert sorted(placed) == package_modules()


@pytest.mark.parametrize("module", package_modules())
def test_a_module_imports_only_its_own_layer_and_below_at_the_top(module):
    assert violations(module, (PACKAGE / f"{module}.py").read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("storage", "from finreason import errors\n", []),  # a lower layer, at the top
        ("training", "from finreason import evaluation, models\n", []),  # its own layer and below
        ("storage", "from finreason import training\n", ["storage (layer 0) imports training from layer 3 above it"]),  # upward
        ("configuration", "from finreason.models import load_model\n", []),  # the same layer, through from-import
        ("layout", "import finreason.export\n", ["layout (layer 0) imports export from layer 4 above it"]),  # upward, plain import
        ("training", "def f():\n    from finreason import memory\n",
         ["training imports memory inside a function: move it to the top of the file"]),  # hidden in a function
        ("models", "from finreason import nowhere\n", ["models imports nowhere, which is in no layer"]),  # unplaced module
        ("models", "import torch\ndef f():\n    import transformers\n", []),  # third-party packages may stay lazy
    ],
)
def test_the_layering_check_finds_what_it_should(module, source, expected):
    assert violations(module, source) == expected
