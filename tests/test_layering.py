"""The tree's dependency rules, read from the source's imports: no import cycle between modules, and
the pipeline's stages import only the stages below them (docs/architecture.md)."""
import ast
import pathlib

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("structures", "pcdiff")

#: stage → the stages it may import (besides itself and the foundation modules named in FOUNDATION)
ALLOWED = {
    "structures.compile": {"structures.types", "structures.logspace", "structures.circuit", "structures.nodes"},
    "structures.queries": {"structures.compile", "structures.types"},
    "pcdiff.codd": set(),
    "pcdiff.decode": {"pcdiff.codd", "pcdiff.backbones"},   # the backbone's noise (backbones.noise)
    "pcdiff.backbones": set(),
    "pcdiff.data": set(),
    "pcdiff.train": {"pcdiff.codd", "pcdiff.backbones", "pcdiff.data"},
}
#: modules every stage of a package may import: the bottom of the tree
FOUNDATION = {"structures": {"structures.limits"}, "pcdiff": {"pcdiff.arguments", "pcdiff.files"}}


def module_name(path: pathlib.Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports() -> nx.DiGraph:
    """Module → module it imports, over structures/ and pcdiff/ (relative imports resolved)."""
    files = {module_name(f): f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def test_no_module_imports_itself_through_a_cycle():
    graph = imports()
    assert len(graph) > 50
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_the_core_never_imports_the_diffusion_package():
    offenders = [(a, b) for a, b in imports().edges if a.startswith("structures") and b.startswith("pcdiff")]
    assert not offenders


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_each_stage_imports_only_the_stages_below_it(stage):
    package = stage.split(".")[0]
    own = {stage, package}                                # the package's face (its __init__) re-exports only
    bad = []
    for a, b in imports().edges:
        if (a == stage or a.startswith(stage + ".")) and b.startswith(package) and not b.startswith(stage):
            allowed = ALLOWED[stage] | FOUNDATION[package]
            if b not in own and not any(b == s or b.startswith(s + ".") for s in allowed):
                bad.append((a, b))
    assert not bad, f"{stage} reaches past its layer: {bad}"
