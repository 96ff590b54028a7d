"""The check action under ops.testing (Scenario), on the demo's cloud at 2025.1 in SQLite.

Each test gets its own copy (conftest's ``demo``) of the cloud
``novadb.sample.demo.build_cloud`` makes: an online migration still to run (a
blocker), rows to archive and Placement providers under stale uuids
(warnings), schemas at an older release's heads (info).  check is a report:
whatever it finds, the action succeeds and ``exit-code`` carries the verdict.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import ops
import pytest
from novadb.check.check import check
from novadb.check.placement import placement_findings
from novadb.online.runner import online_migrate
from ops import testing
from sqlalchemy.engine import make_url

from charm_results import check_results
from tests.charm.demo_cloud import DemoCloud
from tests.charm.test_actions import (
    FILES,
    assert_never_shown,
    context,
    results,
    run_action,
    write_nova_conf,
)

BEHIND = (
    "2 schema revisions pending; behind installed 2026.2 (hibiscus): waiting for the leader to "
    "migrate; credentials: nova.conf"
)
ONLINE_FIX = "juju run nova-cloud-controller/leader online-migrate database=main all-cells=true"
Found = tuple[str, str, str, str]
# (severity, database, code, subject) of every finding on the demo's cloud, worst first.
FOUND: list[Found] = [
    ("blocker", "cell1", "pending-online-migration", "populate_instance_compute_id"),
    ("warning", "cell1", "archivable-rows", ""),
    ("warning", "placement", "name-conflict", ""),
    ("info", "cell0", "pending-revisions", ""),
    ("info", "cell1", "pending-revisions", ""),
]
PLACEMENT_AUDIT = ("warning", "placement", "name-conflict", "")


def state(demo: DemoCloud) -> testing.State:
    return testing.State(config={"nova-conf": str(demo.conf)})


def found(got: dict[str, str]) -> list[Found]:
    """(severity, database, code, subject) of each ``findings.<n>``, in order."""
    numbers = sorted({int(k.split(".")[1]) for k in got if k.startswith("findings.")})
    assert numbers == list(range(len(numbers)))
    return [
        (
            got[f"findings.{i:02d}.severity"],
            got[f"findings.{i:02d}.database"],
            got[f"findings.{i:02d}.code"],
            got.get(f"findings.{i:02d}.subject", ""),  # Juju shows no empty values
        )
        for i in numbers
    ]


def digests(demo: DemoCloud) -> dict[str, str]:
    """Each database file's SHA-256: equal before and after means nothing was written."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(demo.directory.glob("*.sqlite"))
    }


def test_check_reports_the_pending_online_migration_as_a_blocker(demo: DemoCloud) -> None:
    unmigrated = demo.count(
        "main", "SELECT count(*) FROM instances WHERE deleted = 0 AND compute_id IS NULL"
    )
    before = digests(demo)
    ctx = context()
    out = run_action(ctx, state(demo), "check")

    got = results(ctx)
    assert {k: got[k] for k in ("exit-code", "blockers", "warnings", "info")} == {
        "exit-code": "2",
        "blockers": "1",
        "warnings": "2",
        "info": "2",
    }
    assert found(got) == FOUND
    assert {k.split(".", 2)[2]: v for k, v in got.items() if k.startswith("findings.00.")} == {
        "severity": "blocker",
        "database": "cell1",
        "code": "pending-online-migration",
        "subject": "populate_instance_compute_id",
        "count": str(unmigrated),
        "summary": f"online migration populate_instance_compute_id has {unmigrated} row(s) to "
        "migrate; Nova requires it complete before the next upgrade",
        "fix": ONLINE_FIX,
    }
    assert int(got["findings.01.count"]) > 0
    assert (
        got["findings.01.fix"]
        == "juju run nova-cloud-controller/leader archive until-complete=true all-cells=true"
    )
    assert got["findings.02.fix"] == "juju run nova-cloud-controller/leader rebuild-placement"
    # The first database, then every finding as it is found (never throttled away).
    assert ctx.action_logs[0] == f"api ({demo.settings.api})"
    assert [line for line in ctx.action_logs if ": blocker: " in line] == [
        "cell1: blocker: " + got["findings.00.summary"]
    ]
    assert len(ctx.action_logs) == 1 + len(FOUND)
    assert out.unit_status == ops.WaitingStatus(BEHIND)
    assert digests(demo) == before


def test_check_after_online_migrate_succeeds_without_the_blocker(demo: DemoCloud) -> None:
    online_migrate(demo.settings, all_cells=True)
    ctx = context()
    run_action(ctx, state(demo), "check")  # exit-code 1: still a report, not a failure
    got = results(ctx)
    assert (got["exit-code"], got["blockers"], got["warnings"]) == ("1", "0", "2")
    assert found(got) == FOUND[1:]


def test_check_without_placement_leaves_the_audit_out(demo: DemoCloud) -> None:
    ctx = context()
    run_action(ctx, state(demo), "check", {"no-placement": True})
    got = results(ctx)
    assert (got["exit-code"], got["blockers"], got["warnings"]) == ("2", "1", "1")
    assert found(got) == [f for f in FOUND if f != PLACEMENT_AUDIT]


def test_check_results_are_the_library_result_flattened(demo: DemoCloud) -> None:
    """What the action sets is charm_results.check_results of the library's own check."""
    expected = {
        k: str(v)
        for k, v in check_results(check(demo.settings, placement=placement_findings)).items()
    }
    del expected["elapsed"]
    ctx = context()
    run_action(ctx, state(demo), "check")
    assert results(ctx) == expected


def test_check_reports_a_database_refusing_the_password(
    tmp_path: Path, mysql_url_base: str
) -> None:
    """Unreachable is a blocker finding, not a failure; the URL masked, never the password."""
    server = make_url(mysql_url_base)
    password = "s3cretpw-denied"
    urls = {
        db: f"mysql+pymysql://novadb_nobody:{password}@{server.host}:{server.port or 3306}/{db}"
        for db in FILES
    }
    conf = write_nova_conf(tmp_path / "nova.conf", urls)
    ctx = context()
    out = run_action(ctx, testing.State(config={"nova-conf": str(conf)}), "check")
    got = results(ctx)
    assert (got["exit-code"], got["warnings"], got["info"]) == ("2", "0", "0")
    unreachable = [f for f in found(got) if f[2] == "unreachable"]
    assert unreachable == [
        ("blocker", db, "unreachable", "") for db in ("api", "main", "placement")
    ]
    assert "novadb_nobody:***@" in got["findings.00.summary"]
    assert "Access denied for user 'novadb_nobody'" in got["findings.00.summary"]
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert_never_shown(ctx, out, "", password)


@pytest.mark.parametrize("params", [{}, {"no-placement": True}])
def test_check_without_a_database_fails(tmp_path: Path, params: dict[str, bool]) -> None:
    conf = tmp_path / "nova.conf"
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, testing.State(config={"nova-conf": str(conf)}), "check", params)
    assert failed.value.message.startswith("no database configured: relate the application")
    assert failed.value.message.endswith(f"or provide {conf}")
    assert not ctx.action_results
