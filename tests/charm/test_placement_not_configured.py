"""The Placement actions on a unit whose nova.conf has no [placement_database].

The same condition as the CLI's exit 78: every Placement action fails with the
one line that says what to set, nothing is written, and ``check`` reports it
once as info (never a blocker whose fix fails).
"""

from __future__ import annotations

import hashlib

import pytest
from novadb.errors import PLACEMENT_NOT_CONFIGURED
from ops import testing

from tests.charm.placement_cloud import PlacementCloud
from tests.charm.test_actions import context, results, run_action


def classic(pcloud: PlacementCloud) -> testing.State:
    """The unit's nova.conf with [database] and [api_database] only."""
    s = pcloud.cloud.settings
    pcloud.conf.write_text(
        f"[database]\nconnection = {s.main}\n\n[api_database]\nconnection = {s.api}\n"
    )
    return pcloud.state()


def digests(pcloud: PlacementCloud) -> dict[str, str]:
    return {
        str(p.relative_to(pcloud.base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(pcloud.base.rglob("*.sqlite"))
    }


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("placement-audit", {}),
        ("placement-audit", {"delete": True}),
        ("heal-allocations", {"dry-run": True}),
        ("heal-allocations", {}),
        ("sync-aggregates", {"dry-run": True}),
        ("sync-aggregates", {}),
        ("rebuild-placement", {"dry-run": True}),
        ("rebuild-placement", {}),
    ],
)
def test_placement_actions_fail_with_the_one_line(
    pcloud: PlacementCloud, action: str, params: dict[str, object]
) -> None:
    state = classic(pcloud)
    before = digests(pcloud)

    with pytest.raises(testing.ActionFailed) as failed:
        run_action(context(), state, action, params)

    assert failed.value.message == PLACEMENT_NOT_CONFIGURED
    assert digests(pcloud) == before
    assert list(pcloud.backups.glob("*")) == []  # rebuild-placement took no backup either


def test_check_reports_it_once_as_info(pcloud: PlacementCloud) -> None:
    ctx = context()
    run_action(ctx, classic(pcloud), "check")

    got = results(ctx)
    placement = sorted(
        k.rsplit(".", 1)[0] for k, v in got.items() if k.endswith(".database") and v == "placement"
    )
    assert [(got[f"{p}.severity"], got[f"{p}.code"], got[f"{p}.summary"]) for p in placement] == [
        ("info", "placement-not-checked", PLACEMENT_NOT_CONFIGURED)
    ]
    assert got["blockers"] == "0"
