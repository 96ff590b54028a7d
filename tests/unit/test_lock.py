"""The lock and the files derived from it are up to date (no network needed).

uv.lock records pyproject.toml's requirements as it resolved them: if they
differ, the lock is stale (run ./tools/lock).  requirements/dev.txt and
requirements-charm.txt must pin exactly the locked versions of exactly the
packages their extras need.  requirements/lowest.txt must be pyproject's
lower bounds, so that .ci/lowest tests what the ranges promise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
PACKAGES = {p["name"]: p for p in LOCK["package"]}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := PIN.match(line):
            found[canonicalize_name(m.group(1))] = m.group(2)
    return found


def declared() -> set[tuple[str, str, str]]:
    """(extra or "", name, specifier) for every requirement pyproject declares."""
    out = set()
    groups = {"": PYPROJECT["project"]["dependencies"],
              **PYPROJECT["project"]["optional-dependencies"]}  # fmt: skip
    for extra, requirements in groups.items():
        for text in requirements:
            r = Requirement(text)
            name = canonicalize_name(r.name)
            out.add((extra, name + "".join(f"[{e}]" for e in sorted(r.extras)), str(r.specifier)))
    return out


def locked() -> set[tuple[str, str, str]]:
    """The same, as uv.lock recorded them when it was made."""
    out = set()
    for entry in PACKAGES["novadb"]["metadata"]["requires-dist"]:
        m = re.fullmatch(r"extra == '([^']+)'", entry.get("marker", "extra == ''"))
        extra = "" if "marker" not in entry else m.group(1) if m else None
        assert extra is not None, entry
        extras = "".join(f"[{e}]" for e in sorted(entry.get("extras", [])))
        spec = str(SpecifierSet(entry.get("specifier", "")))
        out.add((extra, canonicalize_name(entry["name"]) + extras, spec))
    return out


def closure(extras: tuple[str, ...]) -> set[str]:
    """Every package novadb with ``extras`` needs, by uv.lock's graph (markers ignored)."""
    needed: set[str] = set()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("novadb", extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        if name != "novadb":
            needed.add(name)
        package = PACKAGES[name]
        edges = list(package.get("dependencies", []))
        for extra in wanted:
            edges += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(e["name"], tuple(sorted(e.get("extra", [])))) for e in edges]
    return needed


def test_the_lock_has_pyprojects_requirements() -> None:
    assert {(e, n, str(SpecifierSet(s))) for e, n, s in declared()} == locked(), (
        "uv.lock is stale: run ./tools/lock"
    )


@pytest.mark.parametrize(
    ("path", "extras"),
    [("requirements/dev.txt", ("test", "lint")), ("requirements-charm.txt", ("charm",))],
)
def test_derived_files_pin_the_locked_versions(path: str, extras: tuple[str, ...]) -> None:
    want = {canonicalize_name(n): PACKAGES[n]["version"] for n in closure(extras)}

    assert pins(ROOT / path) == want, f"{path} is stale: run ./tools/lock --frozen"


def test_the_charm_installs_the_library_after_its_pinned_dependencies() -> None:
    lines = (ROOT / "requirements-charm.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "."
    runtime = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]
    }
    assert runtime <= set(pins(ROOT / "requirements-charm.txt"))


def test_lowest_txt_is_pyprojects_lower_bounds() -> None:
    bounds = {}
    for text in [*PYPROJECT["project"]["dependencies"],
                 *PYPROJECT["project"]["optional-dependencies"]["charm"]]:  # fmt: skip
        r = Requirement(text)
        lower = [s.version for s in r.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text}: a range needs one lower bound"
        bounds[canonicalize_name(r.name)] = lower[0]

    lowest = pins(ROOT / "requirements/lowest.txt")
    assert {name: lowest.get(name) for name in bounds} == bounds
    # Anything else there is a dependency that only the lowest versions need.
    assert set(lowest) - set(bounds) <= {"greenlet"}
