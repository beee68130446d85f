"""The tree shows the architecture: imports go down docs/development.md's layers and never in a circle, and
docs/performance.md shows the engines' table as seqrev.engines has it."""

import ast
import graphlib
import re
import subprocess
import sys

from seqrev.engines import table

from conftest import ROOT

PACKAGE = ROOT / "seqrev"


def import_graph() -> dict[str, set[str]]:
    """Every seqrev module and the seqrev modules it imports, at the top or inside a function."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "seqrev"] = path

    def module_of(name: str) -> str | None:
        name = name.removeprefix("seqrev.") if name != "seqrev" else "seqrev"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("seqrev"):
                imported = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names if alias.name.startswith("seqrev")]
            else:
                continue
            for target in filter(None, map(module_of, imported)):
                if target != name and not name.startswith(f"{target}."):  # a package's own modules
                    graph[name].add(target)
    return graph


def layers() -> dict[str, int]:
    """docs/development.md's layers: each module's number."""
    text = (ROOT / "docs" / "development.md").read_text()
    found = {}
    for number, body in re.findall(r"^(\d)\. [^:]+:((?:.*\n)(?:   .*\n)*)", text, re.M):
        found.update({module: int(number) for module in re.findall(r"`([\w.]+)`", body)})
    return found


def test_imports_go_down_the_documented_layers_and_never_in_a_circle():
    graph, layer = import_graph(), layers()
    assert set(graph) == set(layer), "every module in exactly one layer of docs/development.md"
    upward = [f"{a} ({layer[a]}) imports {b} ({layer[b]})" for a in graph for b in graph[a] if layer[b] > layer[a]]
    assert not upward
    graphlib.TopologicalSorter(graph).prepare()  # CycleError for an import circle


def test_the_packed_launchers_process_plans_a_sweep_without_torch():
    """The launcher chooses engines and groups jobs from the configs alone: its process stays small."""
    code = ("import sys; from seqrev.catalog import compose; from seqrev.engines import Job, choose; "
            "import seqrev.packs.launcher; "
            "cfg = compose(['model=both_outputs', 'paths.output_dir=/tmp/unused']); "
            "assert choose(Job(cfg, 'both_outputs'), packing=True).engine == 'packed'; "
            "assert choose(Job(cfg, 'attention'), packing=True).engine == 'grouped'; "
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_docs_show_the_engines_table_as_the_code_has_it():
    assert table() in (ROOT / "docs" / "performance.md").read_text()
