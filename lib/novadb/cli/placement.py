"""The Placement subcommands of ``novadb``: audit, heal, sync aggregates, rebuild.

Kept apart from ``cli.py`` so each file stays about one family of commands;
``cli.py`` calls :func:`add_parsers` and merges :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from novadb import counts
from novadb.api.operations import (
    heal_allocations,
    placement_audit,
    rebuild_placement,
    restore_placement,
    sync_aggregates,
)
from novadb.api.options import (
    PlacementAuditOptions,
    RebuildPlacementOptions,
    RestorePlacementOptions,
    SyncAggregatesOptions,
)
from novadb.cli.output import Output
from novadb.cli.progress import stop_on_ctrl_c
from novadb.config import Settings
from novadb.errors import BadInput
from novadb.placement.heal import HealOptions
from novadb.render import placement as render_placement

AddParser = Callable[..., argparse.ArgumentParser]


def _positive(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_parsers(add: AddParser) -> None:
    """Register the four Placement subcommands on the main parser."""
    p = add(
        "placement-audit",
        "Compare Placement with the cells' compute nodes and instances.",
        "novadb placement-audit",
        "novadb placement-audit --delete",
        "novadb placement-audit --resource-provider 6a1c0b1e-0d3f-4c8a-9b2e-1f0e8c3d2a11",
    )
    p.add_argument("--delete", action="store_true", help="delete orphan allocations found")
    p.add_argument("--resource-provider", metavar="UUID", help="audit only this resource provider")

    p = add(
        "heal-allocations",
        "Create missing instance allocations in Placement from their flavors.",
        "novadb heal-allocations --dry-run",
        "novadb heal-allocations --max-count 500",
        "novadb heal-allocations --instance 2b9f4f67-1f0e-4a4e-9d0b-5c6d7e8f9a0b --force",
    )
    p.add_argument("--max-count", metavar="N", help="heal at most N instances, then exit 1")
    p.add_argument("--dry-run", action="store_true", help="show what would be healed")
    p.add_argument("--instance", metavar="UUID", help="only this instance")
    p.add_argument("--cell", metavar="UUID", help="only this cell")
    p.add_argument(
        "--force",
        action="store_true",
        help="rewrite the instance's allocations from its flavor (needs --instance)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=HealOptions.batch_size,
        metavar="N",
        help=f"instances per Placement transaction (default {HealOptions.batch_size})",
    )

    p = add(
        "sync-aggregates",
        "Mirror Nova's host aggregates as Placement aggregates (add only).",
        "novadb sync-aggregates",
        "novadb sync-aggregates --dry-run",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be added")

    p = add(
        "rebuild-placement",
        "Back up Placement, recreate it from Nova's cells, heal, sync and audit.",
        "novadb rebuild-placement --dry-run",
        "novadb rebuild-placement --backup /var/backups/placement.json.gz",
        "novadb rebuild-placement --restore /var/backups/placement.json.gz",
    )
    p.add_argument(
        "--backup",
        metavar="FILE",
        help="where to write the backup (default: placement-backup-<time>.json.gz here)",
    )
    p.add_argument("--dry-run", action="store_true", help="report what it would do")
    p.add_argument(
        "--force", action="store_true", help="rebuild even if Placement holds what Nova cannot"
    )
    p.add_argument(
        "--restore", metavar="FILE", help="put a backup back exactly, instead of rebuilding"
    )


def _audit(args: argparse.Namespace, out: Output, settings: Settings) -> int:
    options = PlacementAuditOptions(delete=args.delete, resource_provider=args.resource_provider)
    result = placement_audit(settings, options, progress=out.progress)
    out.result(result, lambda r: render_placement.audit_table(r, out.options))
    return result.exit_code


def _heal(args: argparse.Namespace, out: Output, settings: Settings) -> int:
    options = HealOptions(
        # nova-manage ignores --max-count (even a bad one) when --instance is given.
        max_count=counts.max_count(args.max_count) if args.instance is None else None,
        dry_run=args.dry_run,
        instance=args.instance,
        cell=args.cell,
        force=args.force,
        batch_size=args.batch_size,
    )
    with stop_on_ctrl_c() as stop:
        result = heal_allocations(settings, options, progress=out.progress, stop=stop)
    out.result(result, render_placement.heal_table)
    return result.exit_code


def _aggregates(args: argparse.Namespace, out: Output, settings: Settings) -> int:
    result = sync_aggregates(
        settings, SyncAggregatesOptions(dry_run=args.dry_run), progress=out.progress
    )
    out.result(result, render_placement.aggregates_table)
    return result.exit_code


def _rebuild(args: argparse.Namespace, out: Output, settings: Settings) -> int:
    if args.restore is not None:
        if args.backup or args.force or args.dry_run:
            raise BadInput("--restore FILE takes no other rebuild-placement option")
        restored = restore_placement(
            settings, RestorePlacementOptions(args.restore), progress=out.progress
        )
        out.result(restored, render_placement.restore_text)
        return restored.exit_code
    with stop_on_ctrl_c() as stop:
        options = RebuildPlacementOptions(
            backup=args.backup, dry_run=args.dry_run, force=args.force
        )
        result = rebuild_placement(settings, options, progress=out.progress, stop=stop)
    out.result(result, render_placement.rebuild_table)
    return result.exit_code


Command = Callable[[argparse.Namespace, Output, Settings], int]
COMMANDS: dict[str, Command] = {
    "placement-audit": _audit,
    "heal-allocations": _heal,
    "sync-aggregates": _aggregates,
    "rebuild-placement": _rebuild,
}
