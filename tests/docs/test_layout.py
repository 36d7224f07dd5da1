"""README's layout table against the tree as it is when the test runs.

The packages are every top-level directory holding an `__init__.py`, with their sub-packages;
the top-level modules are the `*.py` files at the root. Each package has a row of its own whose
first cell names it (`` `api/routers/` ``) and whose second names each of its modules as
`` `name.py` `` (`__init__` and `__main__` aside). A row naming a package, a module or a
top-level file that does not exist fails too.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_MODULES = {"__init__.py", "__main__.py"}
CODE = re.compile(r"`([^`]+)`")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


@dataclass
class Row:
    paths: list[str]  # the first cell's names: `core/`, `worker.py`, `alembic.ini`
    modules: set[str] = field(default_factory=set)  # the second cell's `name.py`


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def layout_rows(readme: str) -> list[Row]:
    rows = []
    for line in section(readme, "Layout").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 2:
            continue
        if set(cells[0]) <= set("-: ") or cells[0] == "path":  # the header and its rule
            continue
        names = CODE.findall(" ".join(cells[1:]))
        rows.append(Row(CODE.findall(cells[0]), {n for n in names if MODULE.match(n)}))
    return rows


def packages(root: Path) -> dict[str, set[str]]:
    """Every package as `path/` with its module files, from the top-level ones down."""
    found: dict[str, set[str]] = {}

    def visit(directory: Path) -> None:
        relative = directory.relative_to(root).as_posix() + "/"
        found[relative] = {
            p.name for p in directory.glob("*.py") if p.is_file() and p.name not in SKIPPED_MODULES
        }
        for child in sorted(directory.iterdir()):
            if child.is_dir() and (child / "__init__.py").is_file():
                visit(child)

    for top in sorted(root.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and (top / "__init__.py").is_file():
            visit(top)
    return found


def top_level_modules(root: Path) -> set[str]:
    return {p.name for p in root.glob("*.py") if p.is_file()}


def layout_problems(root: Path, readme: str) -> list[str]:
    """What the table misses or names wrongly, one line each; empty when it matches the tree."""
    rows = layout_rows(readme)
    tree = packages(root)
    problems = []

    rows_of: dict[str, list[Row]] = {}
    for row in rows:
        for path in row.paths:
            rows_of.setdefault(path, []).append(row)
            if not (root / path.rstrip("/")).exists():
                problems.append(f"stale row: `{path}` does not exist")

    for package, modules in sorted(tree.items()):
        if package not in rows_of:
            listed = ", ".join(f"`{m}`" for m in sorted(modules)) or "no modules"
            problems.append(f"missing row: `{package}` (modules: {listed})")
            continue
        named = set().union(*(r.modules for r in rows_of[package]))
        for module in sorted(modules - named):
            problems.append(f"missing module: `{module}` in the row of `{package}`")
        for module in sorted(named - modules):
            problems.append(f"stale module: `{module}` in the row of `{package}` does not exist")

    # A row of a folder that is no package (`tests/`) may name files in it: they must exist.
    for row in rows:
        folders = [p for p in row.paths if p.endswith("/") and p not in tree]
        if folders and not any(p in tree for p in row.paths):
            for module in sorted(row.modules):
                if not any((root / folder / module).is_file() for folder in folders):
                    names = ", ".join(f"`{f}`" for f in folders)
                    problems.append(
                        f"stale module: `{module}` in the row of {names} does not exist"
                    )

    for module in sorted(top_level_modules(root) - set(rows_of)):
        problems.append(f"missing row: top-level module `{module}`")
    return problems


def test_the_layout_table_names_every_package_and_module() -> None:
    problems = layout_problems(ROOT, (ROOT / "README.md").read_text(encoding="utf-8"))
    if problems:
        pytest.fail("README.md's Layout table does not match the tree:\n" + "\n".join(problems))


def test_the_check_sees_what_is_missing_and_what_is_stale(tmp_path: Path) -> None:
    for path in ("core/__init__.py", "core/db.py", "core/new.py", "core/sub/__init__.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "core/sub/inner.py").write_text("")
    (tmp_path / "worker.py").write_text("")
    (tmp_path / "notapackage").mkdir()
    (tmp_path / "notapackage/script.py").write_text("")
    readme = (
        "# x\n\n## Layout\n\n| path | what |\n| --- | --- |\n"
        "| `core/` | `db.py` (the database), `gone.py`, `Settings` |\n"
        "| `old/` | `thing.py` |\n"
        "| `notapackage/` | `script.py`, `lost.py` |\n"
        "\n## Next\n\n| `api/` | not in the layout section |\n"
    )
    assert layout_problems(tmp_path, readme) == [
        "stale row: `old/` does not exist",
        "missing module: `new.py` in the row of `core/`",
        "stale module: `gone.py` in the row of `core/` does not exist",
        "missing row: `core/sub/` (modules: `inner.py`)",
        "stale module: `thing.py` in the row of `old/` does not exist",
        "stale module: `lost.py` in the row of `notapackage/` does not exist",
        "missing row: top-level module `worker.py`",
    ]
