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
from novadb.placement.audit import AuditFinding, placement_audit
from novadb.placement.kinds import AuditKind

EXAMPLES = 3


def placement_findings(settings: Settings) -> list[Finding]:
    """Run the audit read-only and summarise it per kind."""
    result = placement_audit(settings)
    by_kind: dict[AuditKind, list[AuditFinding]] = defaultdict(list)
    for f in result.findings:
        by_kind[f.kind].append(f)
    findings = []
    for kind, found in by_kind.items():
        examples = tuple(f.consumer or f.provider for f in found[:EXAMPLES])
        findings.append(
            Finding(
                "placement",
                WARNING,
                kind.value,
                f"{len(found)} {kind.summary}",
                len(found),
                kind.check_fix,
                examples=examples,
            )
        )
    return findings
