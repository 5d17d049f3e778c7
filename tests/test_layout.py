"""The package's layout: imports only go down the stages, and no module imports itself round a
cycle, counting imports inside functions and under TYPE_CHECKING as well as module-level ones."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "music2video"

# Each stage (a subpackage, or a module at the package's top) and its rank: a module may import
# its own stage or a stage of a lower rank, never one of its rank or higher.
RANKS = {
    "__init__": 0, "errors": 0,  # the version; the one UserError base
    "files": 1, "ffmpeg": 1,  # atomic writes; ffmpeg plumbing
    "options": 1,  # what a run was asked for, as plain data
    "song": 2, "models": 2,  # the song's analysis / files on disk -> networks (neither needs the other)
    "output": 3,  # the files beside the video
    "engine": 4,  # a section -> events
    "driver": 5,  # which work runs where, and what is written down
    "testing": 6,  # tiny models and songs
    "cli": 7, "tiny": 7, "__main__": 8,  # the command lines
}


def module_name(path: Path) -> str:
    """music2video/song/audio.py -> music2video.song.audio (a package's __init__: its name)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules one module imports, anywhere in its body (`from . import x` names
    the submodule x when x is one)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            subs = {f"{source}.{a.name}" for a in node.names} & known
            found |= subs or {source}
            if subs != {f"{source}.{a.name}" for a in node.names}:
                found.add(source)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def stage(name: str) -> str:
    """The stage a module belongs to: its subpackage, or itself at the package's top."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a stage to one of its rank or higher, as 'a -> b' lines."""
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if stage(a) != stage(b) and RANKS[stage(b)] >= RANKS[stage(a)])


def test_every_stage_has_a_rank():
    assert {stage(name) for name in modules()} <= set(RANKS)


def test_no_import_cycle_even_through_function_level_imports():
    assert cycles(graph()) == []


def test_imports_only_go_down_the_stages():
    assert upward(graph()) == []


def test_the_checks_see_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The checks themselves: a function-level import round a cycle, and one that goes up."""
    pkg = tmp_path / "music2video"
    for folder in ("", "song", "engine"):
        (pkg / folder).mkdir(parents=True, exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "song" / "audio.py").write_text("def f():\n    from ..engine import loop\n")
    (pkg / "engine" / "loop.py").write_text("from ..song.audio import f\n")
    monkeypatch.setitem(globals(), "PACKAGE", pkg)
    edges = graph()
    assert cycles(edges) == [["music2video.engine.loop", "music2video.song.audio"]]
    assert upward(edges) == ["music2video.song.audio -> music2video.engine.loop"]


@pytest.mark.parametrize("tool", ["bench", "gpureport"])
def test_developer_tools_live_outside_the_package(tool):
    assert not (PACKAGE / f"{tool}.py").exists()
    assert (PACKAGE.parent / "tools" / f"{tool}.py").exists()
