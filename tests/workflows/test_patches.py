"""Every patch in the workflow code has its row in docs/workflow-versions.md, where the rule for
retiring it is written, and the table names no patch the code no longer has."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def patch_ids_in_code() -> set[str]:
    """The IDs given to workflow.patched / deprecate_patch, through a module constant or not."""
    found = set()
    for path in (ROOT / "workflows").glob("*.py"):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("patched", "deprecate_patch")
                and node.args
            ):
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    found.add(str(arg.value))
                elif isinstance(arg, ast.Name):
                    found.add(str(constants[arg.id]))
    return found


def patch_ids_in_docs() -> set[str]:
    text = (ROOT / "docs" / "workflow-versions.md").read_text()
    table = text.split("## The patches in force", 1)[1]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE))


def test_the_code_has_patches_to_check() -> None:
    assert "delivery-wakes-on-change" in patch_ids_in_code()


def test_every_patch_has_its_row_and_every_row_its_patch() -> None:
    code, docs = patch_ids_in_code(), patch_ids_in_docs()
    assert code - docs == set(), "patches missing from docs/workflow-versions.md"
    assert docs - code == set(), "rows of docs/workflow-versions.md for patches that are gone"
