"""charm_results on its own: library results built by hand, flattened without running the charm.

The actions' tests (test_actions.py, test_placement_actions.py,
test_check_action.py) check every key on real databases; these cover what a
small real cloud does not reach, such as more findings than the results list.
"""

from __future__ import annotations

from novadb.check.check import CheckResult
from novadb.findings import BLOCKER, INFO, WARNING, Finding, Severity

from charm_results import LISTED, check_results, flatten, numbered, result_key


def finding(severity: Severity, n: int, subject: str = "") -> Finding:
    return Finding(f"cell{n}", severity, f"code-{n}", f"summary {n}", n, f"fix {n}", subject)


def test_check_results_worst_first_and_cut_at_the_limit() -> None:
    # In database order, severities mixed: 6 blockers, 7 warnings, 12 info.
    severities: tuple[Severity, ...] = (INFO, WARNING, INFO, BLOCKER) * 6 + (WARNING,)
    findings = [finding(severity, n) for n, severity in enumerate(severities)]
    result = CheckResult(tuple(findings), (), 1.23456)
    got = check_results(result)
    blockers = [f for f in findings if f.severity == BLOCKER]
    warnings = [f for f in findings if f.severity == WARNING]
    infos = [f for f in findings if f.severity == INFO]
    assert {k: got[k] for k in ("exit-code", "blockers", "warnings", "info", "elapsed")} == {
        "exit-code": 2,
        "blockers": len(blockers),
        "warnings": len(warnings),
        "info": len(infos),
        "elapsed": 1.235,
    }
    assert len(findings) > LISTED == 20
    shown = (blockers + warnings + infos)[:LISTED]  # stable: database order within a severity
    assert [got[f"findings.{i:02d}.code"] for i in range(LISTED)] == [f.code for f in shown]
    assert f"findings.{LISTED:02d}.code" not in got
    assert {k.split(".", 2)[2]: v for k, v in got.items() if k.startswith("findings.00.")} == {
        "severity": "blocker",
        "database": "cell3",
        "code": "code-3",
        "count": "3",
        "summary": "summary 3",
        "fix": "fix 3",
    }  # no subject: Juju shows no empty values


def test_check_results_with_nothing_found() -> None:
    got = check_results(CheckResult((), (), 0.5))
    assert got == {"exit-code": 0, "blockers": 0, "warnings": 0, "info": 0, "elapsed": 0.5}


def test_check_results_subject_and_count_zero() -> None:
    result = CheckResult((finding(INFO, 0, subject="instances"),), (), 0.0)
    got = check_results(result)
    assert (got["exit-code"], got["findings.00.subject"], got["findings.00.count"]) == (
        0,
        "instances",
        "0",
    )


def test_keys_are_what_juju_accepts() -> None:
    assert result_key("rows", "API_DB", "Instance_Mappings") == "rows.api-db.instance-mappings"
    assert flatten({"cell1.instances": 3, "API_DB.x_y": 1}) == {
        "rows.api-db.x-y": "1",
        "rows.cell1.instances": "3",
    }
    assert numbered("items", [{"a": 1, "b": None, "c": ""}, {"a": 2}], 1) == {"items.0.a": "1"}
