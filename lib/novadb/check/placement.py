"""The Placement audit as ``check`` findings: one per kind, counted, with examples.

A disagreement between Placement and the cells does not stop an upgrade, so
every kind is a *warning*: the cloud keeps running, but instances fail to
schedule (a missing provider or a 409 name conflict) or capacity is
miscounted (orphans, wrong inventory) until it is fixed.
"""

from __future__ import annotations

from collections import defaultdict

from novadb.config import Settings
from novadb.findings import WARNING, Finding
from novadb.placement.audit import FIXES, AuditFinding, placement_audit

EXAMPLES = 3
_SUMMARY = {
    "missing-provider": "compute nodes without a resource provider",
    "name-conflict": "providers holding a compute node's name under another uuid "
    "(nova-compute gets 409)",
    "stale-provider": "resource providers that are no compute node",
    "inventory-mismatch": "providers whose inventory differs from their compute node",
    "orphan-allocation": "orphan allocations (consumer is no instance or migration there)",
}


def placement_findings(settings: Settings) -> list[Finding]:
    """Run the audit read-only and summarise it per kind."""
    result = placement_audit(settings)
    by_kind: dict[str, list[AuditFinding]] = defaultdict(list)
    for f in result.findings:
        by_kind[f.kind].append(f)
    findings = []
    for kind, found in by_kind.items():
        fix = "novadb rebuild-placement" if "{host}" in FIXES[kind] else FIXES[kind]
        examples = tuple(f.consumer or f.provider for f in found[:EXAMPLES])
        findings.append(
            Finding(
                "placement",
                WARNING,
                kind,
                f"{len(found)} {_SUMMARY[kind]}",
                len(found),
                fix,
                examples=examples,
            )
        )
    return findings
