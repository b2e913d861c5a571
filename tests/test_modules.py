"""The package's structure: no two modules of transtok need each other, directly or around a circle."""
import ast
from pathlib import Path

import transtok

PACKAGE = Path(transtok.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The transtok modules ``path`` imports anywhere in it: at the top, inside functions (a lazy
    import is a dependency all the same) or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "transtok":  # from transtok import checkpoint
                found.update(f"transtok.{alias.name}" for alias in node.names)
            elif node.module.startswith("transtok."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("transtok."))
    return found


def graph() -> dict[str, set[str]]:
    modules = {f"transtok.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as [a, b, ..., a], or None (a depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for other in sorted(edges[node]):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_every_import_is_seen(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from transtok.errors import ConfigError\n"
                      "import transtok.align as align\n"
                      "from transtok import checkpoint, corpus\n"
                      "if TYPE_CHECKING:\n    from transtok.hydra import Hydra\n"
                      "def f():\n    from transtok.loading import load_model\n"
                      "class C:\n    def g(self):\n        import transtok.shards\n"
                      "from .relative import x\nfrom transtokens import y\n", encoding="utf-8")
    assert imports_of(source) == {"transtok.errors", "transtok.align", "transtok.checkpoint", "transtok.corpus",
                                  "transtok.hydra", "transtok.loading", "transtok.shards"}


def test_no_module_imports_another_in_a_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
