"""The package boundaries that keep the house readable, checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = {"flwr", "ray", "hydra", "omegaconf"}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module a file imports (also inside functions)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def package_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    return files


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("common", FRAMEWORKS | {"server", "clients", "launch", "conf"}),
        ("clients", {"server", "launch"}),
        ("server", {"clients", "launch"}),
        ("transport", {"server", "clients", "launch", "conf", "ray", "hydra", "omegaconf"}),
        ("conf", FRAMEWORKS - {"hydra", "omegaconf"} | {"server", "clients", "launch"}),
        ("hydra_plugins", {"flwr", "ray", "server", "clients"}),
    ],
)
def test_packages_import_only_what_their_layer_allows(package, forbidden):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & forbidden)
        for path in package_files(package)
        if imported_roots(path) & forbidden
    }
    assert not offenders, offenders


def test_only_the_entry_points_import_both_apps():
    both = {"server", "clients"}
    files = [*ROOT.glob("*.py"), *ROOT.glob("benchmarks/*.py")]
    files += [
        f
        for package in (
            "common",
            "conf",
            "server",
            "clients",
            "launch",
            "hydra_plugins",
            "transport",
        )
        for f in package_files(package)
    ]
    importers = sorted(str(p.relative_to(ROOT)) for p in files if both <= imported_roots(p))
    assert importers == ["launch/simulation.py"], importers
