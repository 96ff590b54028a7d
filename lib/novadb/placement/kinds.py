"""The kinds of disagreement placement-audit finds, each with its summary and its fix.

One definition read by the audit (its findings), by ``check`` (one finding
per kind, summarised), by the CLI's table and by the charm's result keys, so a
kind's name, sentence and fixing command cannot drift apart.
"""

from __future__ import annotations

from enum import Enum


class AuditKind(str, Enum):
    """A kind of finding: its value is the stable id scripts match on."""

    summary: str  # plural, for a count: "3 compute nodes without a resource provider"
    fix: str  # the command that fixes it; ``{host}`` is the compute node's host

    def __new__(cls, value: str, summary: str, fix: str) -> AuditKind:  # noqa: D102
        member = str.__new__(cls, value)
        member._value_ = value
        member.summary = summary
        member.fix = fix
        return member

    def __str__(self) -> str:
        # The id, not "AuditKind.X": findings print and serialise as their id.
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def fix_for(self, host: str) -> str:
        """The fix with the node's host filled in."""
        return self.fix.format(host=host)

    @property
    def check_fix(self) -> str:
        """The fix ``check`` prints for every finding of the kind (no single host to name)."""
        return "novadb rebuild-placement" if "{host}" in self.fix else self.fix

    MISSING_PROVIDER = (
        "missing-provider",
        "compute nodes without a resource provider",
        "novadb rebuild-placement (or restart nova-compute on {host})",
    )
    NAME_CONFLICT = (
        "name-conflict",
        "providers holding a compute node's name under another uuid (nova-compute gets 409)",
        "novadb rebuild-placement",
    )
    STALE_PROVIDER = (
        "stale-provider",
        "resource providers that are no compute node",
        "novadb rebuild-placement (or delete the provider once nothing uses it)",
    )
    INVENTORY_MISMATCH = (
        "inventory-mismatch",
        "providers whose inventory differs from their compute node",
        "restart nova-compute on {host}, or novadb rebuild-placement",
    )
    ORPHAN_ALLOCATION = (
        "orphan-allocation",
        "orphan allocations (consumer is no instance or migration there)",
        "novadb placement-audit --delete",
    )
