"""The built wheel works on its own: installed into a fresh venv, away from the source tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ("main", "api", "placement")


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, args))} exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_syncs_from_site_packages(tmp_path: Path) -> None:
    # Nothing from this checkout or the test run's own venv may leak in.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["NO_COLOR"] = "1"

    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO],
        cwd=tmp_path,
        env=env,
    )
    wheels = sorted(dist.glob("novadb-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", wheels[0]], cwd=tmp_path, env=env)

    work = tmp_path / "work"
    work.mkdir()
    # The package, and its migrations, come from the venv's site-packages.
    pkg = Path(
        _run(
            [py, "-c", "import novadb, os; print(os.path.dirname(novadb.__file__))"],
            cwd=work,
            env=env,
        ).strip()
    )
    assert pkg.is_relative_to(venv), pkg
    assert "site-packages" in pkg.parts, pkg
    for environment in ENVIRONMENTS:
        assert (pkg / "migrations" / environment / "env.py").is_file(), environment
        assert list((pkg / "migrations" / environment / "versions").glob("*.py")), environment

    novadb = venv / "bin" / "novadb"
    # SQLite only where a URL names it (no database is created by accident).
    urls = [
        f"--{flag}=sqlite:///{work / name}"
        for flag, name in (
            ("database", "nova.sqlite"),
            ("api-database", "nova_api.sqlite"),
            ("placement-database", "placement.sqlite"),
        )
    ]
    _run([novadb, *urls, "sync"], cwd=work, env=env)
    for name in ("nova.sqlite", "nova_api.sqlite", "placement.sqlite"):
        assert (work / name).is_file(), f"{name} not created in {sorted(os.listdir(work))}"

    result = json.loads(_run([novadb, *urls, "--json", "version"], cwd=work, env=env))
    databases = result["databases"]
    assert {db["environment"] for db in databases} >= set(ENVIRONMENTS), databases
    for db in databases:
        assert db["head"], db
        assert db["current"] == db["head"], db
