"""Moves music2video's modules into stage folders and rewrites every import that names them.

    python relayout.py REPO moves     # step 1: flat modules -> stage folders, same names
    python relayout.py REPO renames   # step 2: the modules whose names change (schedule -> segments ...)

Run each step on a clean git tree; it uses `git mv`, so history follows the files. What it
rewrites: `from X import ...` / `import X` statements (module level and inside functions) in the
package, tools/, tests/ and the top-level scripts, kept relative inside the package; names of a
renamed module used as `name.attr` in a file that imported the module by that name; and dotted
`music2video.NAME` mentions in text (docstrings, README, CI scripts). Replayable: a module that is
not where a step expects it is skipped with a note.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

PKG = "music2video"

# Step 1: old flat module -> its new full dotted name (same leaf name, or a tool out of the package).
MOVES = {
    "audio": "song.audio", "lyrics": "song.lyrics", "lrclib": "song.lrclib",
    "schedule": "song.schedule", "sections": "song.sections", "plan": "song.plan",
    "weights": "models.weights", "download": "models.download", "checkpoint": "models.checkpoint",
    "models": "models.models", "autograd": "models.autograd",
    "guidance": "engine.guidance", "optimise": "engine.optimise", "precision": "engine.precision",
    "motion": "engine.motion", "modelset": "engine.modelset", "render": "engine.render",
    "run": "driver.run", "batch": "driver.batch", "scheduler": "driver.scheduler",
    "folder": "driver.folder", "combine": "driver.combine",
    "video": "output.video", "subtitles": "output.subtitles", "fonts": "output.fonts",
    "storyboard": "output.storyboard", "report": "output.report", "sync": "output.sync",
    "tiny": "testing.tiny", "demo": "testing.demo",
}
TOOLS = {"bench", "gpureport"}  # leave the package for tools/
FOLDERS = {
    "song": "The song: audio, lyrics and the plan of what guides which stretch. No torch, no weights.",
    "models": "Files on disk -> networks on a device: the weights registry, downloads, loaders.",
    "engine": "A section -> events: guidance, the optimisation loop, the renderer. No folders, no Ray.",
    "driver": "Which work runs where, and what is written down: the run folder, workers, batches.",
    "output": "The files beside the video: ffmpeg video, subtitles, storyboard, report, sync.",
    "testing": "No-download models and songs for tests, CI and the demo.",
}
TOOLS_DOC = "Developer tools beside the package (not shipped to Ray workers): bench, gpureport."
TINY_SHIM = '''"""`python -m music2video.tiny DIR` writes the tiny models: see music2video/testing/tiny.py."""

from .testing.tiny import main

if __name__ == "__main__":
    main()
'''

# Step 2: modules whose names change, by their step-1 dotted name (inside the package).
RENAMES = {
    "song.schedule": "song.segments",
    "models.models": "models.networks",
    "engine.render": "engine.renderer",
    "driver.run": "driver.pipeline",
    "driver.scheduler": "driver.workers",
}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True)


def module_of(repo: Path, path: Path) -> str:
    """The dotted module name of a .py file under repo (tests/x.py -> tests.x)."""
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(repo: Path, module: str) -> bool:
    return (repo / Path(*module.split(".")) / "__init__.py").exists() or module == PKG


def resolve(node: ast.ImportFrom, here: str, here_is_pkg: bool) -> str:
    """The absolute module of a `from X import` statement in module `here`."""
    if not node.level:
        return node.module or ""
    base = here.split(".") if here_is_pkg else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def render_from(target: str, here: str, here_is_pkg: bool) -> str:
    """How module `here` names `target` in a from-import: relative inside the package."""
    if not (target == PKG or target.startswith(PKG + ".")) or not here.startswith(PKG + "."):
        return target
    pkg = here.split(".") if here_is_pkg else here.split(".")[:-1]
    tgt = target.split(".")
    common = 0
    while common < min(len(pkg), len(tgt)) and pkg[common] == tgt[common]:
        common += 1
    return "." * (len(pkg) - common + 1) + ".".join(tgt[common:])


def alias_text(alias: ast.alias, name: str | None = None) -> str:
    name = name or alias.name
    return f"{name} as {alias.asname}" if alias.asname else name


def used_names(scope: ast.AST) -> set[str]:
    """Every name a scope reads, writes or takes as a parameter."""
    return ({n.id for n in ast.walk(scope) if isinstance(n, ast.Name)}
            | {n.arg for n in ast.walk(scope) if isinstance(n, ast.arg)})


def wrap(head: str, names: list[str], indent: int, width: int = 100) -> str:
    """`head` + names, in parentheses over several lines when one line would pass `width`."""
    line = head + ", ".join(names)
    if indent + len(line) <= width:
        return line
    rows, row = [], ""
    for name in names:
        if row and indent + len(head) + 1 + len(row) + len(name) + 2 > width:
            rows.append(row.rstrip())
            row = ""
        row += name + ", "
    rows.append(row.rstrip(", "))
    pad = "\n" + " " * (indent + len(head) + 1)
    return head + "(" + pad.join(rows) + ")"


def rewrite_imports(text: str, old_here: str, new_here: str, here_is_pkg: bool,
                    mapping: dict[str, str], renamed: frozenset = frozenset()
                    ) -> tuple[str, dict[str, tuple]]:
    """The file's text with its imports pointed at the new modules, and the module names bound
    in it that now have another leaf name (old binding -> (new binding, the function whose
    import binds it, or None for a module-level import))."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    edits = []  # (first line, last line, new text)
    rebound: dict[str, tuple] = {}
    # the function an import statement sits in (None: the module), for where its name is used
    scopes = {inner: fn for fn in ast.walk(tree)
              if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) for inner in ast.walk(fn)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            new = []
            for alias in node.names:
                target = mapping.get(alias.name, alias.name)
                new.append(alias_text(alias, target))
            if new != [alias_text(a) for a in node.names]:
                edits.append((node, "import " + ", ".join(new)))
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node, old_here, here_is_pkg)
            groups: dict[str, list[str]] = {}
            if source in mapping:
                groups[mapping[source]] = [alias_text(a) for a in node.names]
            else:
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in mapping:
                        parent, leaf = mapping[full].rsplit(".", 1)
                        scope = scopes.get(node)
                        if leaf != alias.name and not alias.asname:
                            if alias.name in renamed:  # its uses carry the new name already
                                pass
                            elif leaf in used_names(scope or tree):  # taken: keep the old name
                                alias = ast.alias(leaf, alias.name)
                                leaf = None
                            else:
                                rebound[alias.name] = (leaf, scope)
                        groups.setdefault(parent, []).append(alias_text(alias, leaf))
                    else:
                        groups.setdefault(source, []).append(alias_text(alias))
            original = ast.get_source_segment(text, node)
            if source in mapping:  # keep the statement's own layout, change only its module
                module = render_from(mapping[source], new_here, here_is_pkg)
                statements = [re.sub(r"^from\s+\S+\s+import", f"from {module} import", original)]
            else:
                statements = [wrap(f"from {render_from(t, new_here, here_is_pkg)} import ",
                                   names, node.col_offset) for t, names in groups.items()]
            if statements != [original]:
                edits.append((node, statements))
    for node, new in sorted(edits, key=lambda e: -e[0].lineno):
        first, last = node.lineno - 1, node.end_lineno - 1
        head = lines[first][: node.col_offset]
        tail = lines[last][node.end_col_offset:]
        statements = new if isinstance(new, list) else [new]
        indent = " " * node.col_offset
        body = ("\n" + indent).join(statements)
        if len(statements) > 1 and tail.strip():  # a trailing comment belongs to each line
            body = ("  " + tail.strip() + "\n" + indent).join(statements)
        lines[first: last + 1] = [head + body + tail]
    return "".join(lines), rebound


def rename_bindings(text: str, rebound: dict[str, tuple]) -> str:
    """Every use of a module name the file imported by that name, under the module's new name,
    within the function whose import binds it (or the whole module for a module-level import)."""
    if not rebound:
        return text
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    spots = set()
    for name, (_, scope) in rebound.items():
        where = tree
        if scope is not None:  # the same function in the re-parsed text, by its position
            where = next(fn for fn in ast.walk(tree) if isinstance(fn, type(scope))
                         and fn.lineno == scope.lineno and fn.col_offset == scope.col_offset)
        spots |= {(n.lineno, n.col_offset, n.id) for n in ast.walk(where)
                  if isinstance(n, ast.Name) and n.id == name}
    for lineno, col, name in sorted(spots, reverse=True):
        line = lines[lineno - 1]
        lines[lineno - 1] = line[:col] + rebound[name][0] + line[col + len(name):]
    return "".join(lines)


def mention_pattern(mapping: dict[str, str]) -> tuple[re.Pattern, dict[str, str]]:
    """A regex for dotted mentions `music2video.OLD` in text, with what each becomes."""
    names = {old: new for old, new in mapping.items() if old != f"{PKG}.tiny"}
    keys = sorted(names, key=len, reverse=True)
    return re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, keys)) + r")(?![\w])"), names


def python_files(repo: Path) -> list[Path]:
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files", "*.py"], check=True,
                             capture_output=True, text=True).stdout.split()
    return [repo / p for p in tracked if (repo / p).exists()]


def text_files(repo: Path) -> list[Path]:
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], check=True,
                             capture_output=True, text=True).stdout.split()
    return [repo / p for p in tracked if Path(p).suffix in (".py", ".md", ".sh", "") and
            (repo / p).is_file() and not Path(p).name.startswith(".git")
            and b"\0" not in (repo / p).read_bytes()[:1024]]


def apply(repo: Path, mapping: dict[str, str], moves: dict[Path, Path]) -> None:
    """Rewrites dotted and path mentions in text first (so absolute imports already point at the
    new modules), then relative imports and module-name imports with each file's old and new
    module name, then moves the files."""
    pattern, names = mention_pattern(mapping)
    paths = {f"{old.replace('.', '/')}.py": f"{new.replace('.', '/')}.py"
             for old, new in mapping.items()}
    path_pattern = re.compile(r"(?<![\w/])(" + "|".join(map(re.escape, paths)) + r")")
    for path in text_files(repo):
        text = path.read_text(encoding="utf-8")
        new = pattern.sub(lambda m: names[m.group(1)], text)
        new = path_pattern.sub(lambda m: paths[m.group(1)], new)
        if new != text:
            path.write_text(new, encoding="utf-8")
    for path in python_files(repo):
        dest = moves.get(path, path)
        old_here, new_here = module_of(repo, path), module_of(repo, dest)
        here_is_pkg = path.name == "__init__.py"
        text = path.read_text(encoding="utf-8")
        # names first, on the text the scopes were found in (renaming keeps the line numbers)
        _, rebound = rewrite_imports(text, old_here, new_here, here_is_pkg, mapping)
        renamed = rename_bindings(text, rebound)
        new, _ = rewrite_imports(renamed, old_here, new_here, here_is_pkg, mapping,
                                 frozenset(rebound))
        if new != text:
            path.write_text(new, encoding="utf-8")
    for src, dst in moves.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        git(repo, "mv", str(src.relative_to(repo)), str(dst.relative_to(repo)))


def step_moves(repo: Path) -> None:
    pkg = repo / PKG
    mapping, moves = {}, {}
    for old, new in MOVES.items():
        src = pkg / f"{old}.py"
        if not src.exists():
            print(f"skip {src}: not there", file=sys.stderr)
            continue
        mapping[f"{PKG}.{old}"] = f"{PKG}.{new}"
        moves[src] = pkg / Path(*new.split(".")).with_suffix(".py")
    for tool in TOOLS:
        src = pkg / f"{tool}.py"
        if src.exists():
            mapping[f"{PKG}.{tool}"] = f"tools.{tool}"
            moves[src] = repo / "tools" / f"{tool}.py"
    # models.py and the models/ folder share a name: move it aside first.
    aside = pkg / "_models_flat.py"
    if pkg / "models.py" in moves:
        git(repo, "mv", f"{PKG}/models.py", f"{PKG}/_models_flat.py")
        moves[aside] = moves.pop(pkg / "models.py")
    for folder, doc in FOLDERS.items():
        init = pkg / folder / "__init__.py"
        init.parent.mkdir(exist_ok=True)
        if not init.exists():
            init.write_text(f'"""{doc}"""\n', encoding="utf-8")
            git(repo, "add", str(init.relative_to(repo)))
    tools_init = repo / "tools" / "__init__.py"
    tools_init.parent.mkdir(exist_ok=True)
    if not tools_init.exists():
        tools_init.write_text(f'"""{TOOLS_DOC}"""\n', encoding="utf-8")
        git(repo, "add", "tools/__init__.py")
    apply(repo, mapping, moves)
    shim = pkg / "tiny.py"
    if not shim.exists():
        shim.write_text(TINY_SHIM, encoding="utf-8")
        git(repo, "add", f"{PKG}/tiny.py")


def step_renames(repo: Path) -> None:
    pkg = repo / PKG
    mapping, moves = {}, {}
    for old, new in RENAMES.items():
        src = pkg / Path(*old.split(".")).with_suffix(".py")
        if not src.exists():
            print(f"skip {src}: not there", file=sys.stderr)
            continue
        mapping[f"{PKG}.{old}"] = f"{PKG}.{new}"
        moves[src] = pkg / Path(*new.split(".")).with_suffix(".py")
    apply(repo, mapping, moves)


if __name__ == "__main__":
    where, step = Path(sys.argv[1]).resolve(), sys.argv[2]
    {"moves": step_moves, "renames": step_renames}[step](where)
