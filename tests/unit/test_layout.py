"""The package map stays true: import-linter's contracts (pyproject.toml) hold.

The contracts say which package may import which (see each package's
``__init__`` docstring).  A new top-level module must be placed on purpose: it
is either listed as part of the shared core, and so barred from importing the
domains, or it belongs in a package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib" / "novadb"


def _config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]


def test_import_contracts_hold(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "lib"))
    assert lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True) == 0


def test_every_top_level_module_is_core_or_a_package() -> None:
    core = {
        name.removeprefix("novadb.")
        for contract in _config()["contracts"]
        if contract["id"] == "core"
        for name in contract["source_modules"]
    }
    top = {p.stem for p in LIB.glob("*.py") if p.stem != "__init__"}
    assert top == core, "place new modules in a package, or list them as core in pyproject.toml"
    packages = {p.parent.name for p in LIB.glob("*/__init__.py")}
    layered = {
        name.strip()
        for contract in _config()["contracts"]
        if contract["id"] == "packages"
        for layer in contract["layers"]
        for name in layer.split("|")
    }
    assert packages == layered, "every package is a layer of the 'packages' contract"


def test_every_package_says_what_it_may_import() -> None:
    for init in LIB.glob("**/__init__.py"):
        if init.parent == LIB:
            continue
        doc = init.read_text()
        assert "May import" in doc, f"{init.relative_to(ROOT)}: say what the package may import"


def test_a_broken_rule_is_caught(tmp_path, monkeypatch) -> None:
    """The contracts can fail: a core module importing a domain breaks them."""
    copy = tmp_path / "lib" / "novadb"
    import shutil

    shutil.copytree(LIB, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "dates.py").write_text(
        (copy / "dates.py").read_text() + "\nfrom novadb.archive import purge  # noqa\n"
    )
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "lib"), *sys.path])
    for name in [m for m in sys.modules if m == "novadb" or m.startswith("novadb.")]:
        monkeypatch.delitem(sys.modules, name)
    assert lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True) == 1
