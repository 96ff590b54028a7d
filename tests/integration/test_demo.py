"""``novadb demo``, ``novadb check`` and the Placement commands through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from novadb.cli.main import COMMANDS, main

FLOW = [
    "novadb check",
    "novadb sync",
    "novadb online-migrate --all-cells",
    "novadb archive --until-complete --all-cells",
    "novadb purge --all --all-cells",
    "novadb placement-audit",
    "novadb rebuild-placement --backup",
    "novadb check",
]


@pytest.mark.parametrize("operation", sorted(COMMANDS))
def test_every_operation_help_has_an_example(
    operation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([operation, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    examples = out.split("\nexamples:\n", 1)[1]
    assert f"novadb {operation}" in examples


def test_demo_runs_the_flow_and_keeps_the_cloud(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "cloud"
    assert main(["demo", "--dir", str(directory), "--keep", "--instances", "400"]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^\$ (novadb .*)$", out, flags=re.M)
    assert len(headers) == len(FLOW)
    for got, want in zip(headers, FLOW, strict=True):
        assert got.startswith(want)
    exits = re.findall(r"^exit (\d+), ", out, flags=re.M)
    # check finds a blocker first (online migrations pending), archive moved rows
    # (nova-manage's 1, as `novadb archive` exits), the audit finds the 409
    # conflicts, and after the flow check is clean.
    assert exits == ["2", "0", "0", "1", "0", "3", "0", "0"]
    assert "name-conflict" in out
    lines = out.strip().splitlines()
    assert lines[-4:-2] == [
        f"The sample cloud as built (before the flow) is in {directory / 'as-built'}:",
        f"  novadb --database sqlite:///{directory}/as-built/cell1.sqlite --api-database "
        f"sqlite:///{directory}/as-built/nova_api.sqlite --placement-database "
        f"sqlite:///{directory}/as-built/placement.sqlite check",
    ]
    assert lines[-2] == (
        f"The repaired cloud (after the flow) is in {directory}; explore it with:"
    )
    last = lines[-1].strip()
    assert last.startswith("novadb --database sqlite:///") and last.endswith(" check")
    databases = ["cell0.sqlite", "cell1.sqlite", "nova_api.sqlite", "placement.sqlite"]
    assert sorted(p.name for p in directory.glob("*.sqlite")) == databases
    assert sorted(p.name for p in (directory / "as-built").glob("*.sqlite")) == databases
    assert all(line == line.rstrip() for line in lines)  # not a terminal: no padding

    # The printed command works and finds the cloud clean.
    args = last.split()[1:]
    assert main([*args[:-1], "--json", "check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f for f in report["findings"] if f["severity"] != "info"] == []

    # The cloud as built is the one the flow started from: check finds its blocker
    # (pending online migrations) and the audit's 409 conflicts, and its cells are
    # its own files, not the repaired cloud's.
    as_built = lines[-3].split()[1:]
    assert main([*as_built[:-1], "--json", "check"]) == 2
    before = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in before["findings"] if f["severity"] == "blocker"} == {
        "pending-online-migration"
    }
    assert "name-conflict" in {f["code"] for f in before["findings"]}
    cells = [d["url"] for d in before["databases"] if d["name"].startswith("cell")]
    assert cells and all(f"{directory}/as-built/" in url for url in cells)

    # A second demo into the same directory refuses instead of mixing clouds.
    assert main(["demo", "--dir", str(directory)]) == 2
    assert "already holds SQLite databases" in capsys.readouterr().err


def test_demo_without_keep_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "demo", "--instances", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kept"] is False
    assert not Path(result["directory"]).exists()
    assert [s["exit_code"] for s in result["steps"]] == [2, 0, 0, 1, 0, 3, 0, 0]


def test_placement_commands_refuse_bad_input_with_127(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "c"
    assert main(["demo", "--dir", str(directory), "--keep", "--instances", "100"]) == 0
    capsys.readouterr()
    base = [
        "--database", f"sqlite:///{directory}/cell1.sqlite",
        "--api-database", f"sqlite:///{directory}/nova_api.sqlite",
        "--placement-database", f"sqlite:///{directory}/placement.sqlite",
    ]  # fmt: skip
    cases = [
        (["heal-allocations", "--max-count", "0"], "positive integer for --max-count."),
        (["heal-allocations", "--force"], "The --instance flag is required when using --force"),
        (["placement-audit", "--resource-provider", "0" * 36], "does not exist"),
    ]
    for argv, message in cases:
        assert main([*base, *argv]) == 127
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert main([*base, "heal-allocations", "--dry-run"]) == 4
    assert "Processed 0 instances." in capsys.readouterr().out
    assert main([*base, "sync-aggregates"]) == 0
