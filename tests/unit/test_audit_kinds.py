"""placement-audit's kinds are one enum: id, summary and fix defined once, printed as the id."""

from __future__ import annotations

import json

from novadb.placement.kinds import AuditKind


def test_the_kinds_and_their_ids_in_report_order() -> None:
    assert [k.value for k in AuditKind] == [
        "missing-provider", "name-conflict", "stale-provider", "inventory-mismatch",
        "orphan-allocation",
    ]  # fmt: skip


def test_a_kind_prints_and_serialises_as_its_id() -> None:
    kind = AuditKind.INVENTORY_MISMATCH
    assert (str(kind), f"{kind}", json.dumps([kind])) == (
        "inventory-mismatch", "inventory-mismatch", '["inventory-mismatch"]',
    )  # fmt: skip
    assert kind == "inventory-mismatch"


def test_fixes_name_the_host_where_one_host_is_meant() -> None:
    assert AuditKind.MISSING_PROVIDER.fix_for("cmp-7") == (
        "novadb rebuild-placement (or restart nova-compute on cmp-7)"
    )
    # check summarises a kind over many hosts: it names no host.
    assert AuditKind.MISSING_PROVIDER.check_fix == "novadb rebuild-placement"
    assert AuditKind.ORPHAN_ALLOCATION.check_fix == "novadb placement-audit --delete"
    assert AuditKind.STALE_PROVIDER.summary == "resource providers that are no compute node"
