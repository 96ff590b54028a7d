"""The ``novadb`` command: the same operations the charm exposes as actions.

Global options come before the operation::

    novadb [--config-file F]... [--config-dir D] [--database URL]
           [--api-database URL] [--placement-database URL] [--json] OPERATION ...

Errors are one line on stderr and a documented exit code (see docs/operations.md).  With
``--json`` stdout carries only the result object.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from novadb import config, counts, dberrors, exit_codes
from novadb.api.operations import (
    archive,
    check,
    null_instance_uuid_scan,
    online_migrate,
    purge,
    sync,
    version,
)
from novadb.api.options import (
    CheckOptions,
    NullUuidScanOptions,
    OnlineMigrateOptions,
    SyncOptions,
    VersionOptions,
)
from novadb.archive.archive import DEFAULT_BATCH_SIZE, ArchiveOptions, ArchiveResult
from novadb.archive.purge import PurgeOptions, PurgeResult
from novadb.check.check import CheckResult
from novadb.cli import placement as cli_placement
from novadb.cli.output import Output
from novadb.cli.progress import stop_on_ctrl_c
from novadb.config import Settings, load_settings
from novadb.connections import mask
from novadb.errors import BadArgument, BadInput, NovaDbError
from novadb.online.runner import OnlineResult
from novadb.online.runner import validate as validate_online
from novadb.placement.audit import AuditResult
from novadb.placement.rebuild import RebuildResult
from novadb.progress import Event
from novadb.render import operations as render
from novadb.render import placement as render_placement
from novadb.sample.demo import DEFAULT_INSTANCES, DemoStep, run_demo
from novadb.schema.sync import SyncResult
from novadb.targets import CHOICES


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like nova-manage."""

    def error(self, message: str) -> Any:  # noqa: D102
        sys.stderr.write(f"novadb: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options, then one subcommand per operation."""
    parser = _Parser(
        prog="novadb",
        description="Database operations for OpenStack Nova and Placement.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "novadb demo",
            "novadb --config-file /etc/nova/nova.conf version",
            "novadb --database mysql+pymysql://nova:PASS@db/nova --json sync",
        ),
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(
        dest="operation", metavar="OPERATION", required=True, parser_class=_Parser
    )

    def add(name: str, help_text: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=_examples(*examples),
        )

    _add_schema_commands(add)
    _add_archive_commands(add)
    _add_online_command(add)
    cli_placement.add_parsers(add)
    _add_check_command(add)
    _add_demo_command(add)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """Options that come before the operation: where the databases are, how to print."""
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        metavar="FILE",
        help="nova.conf to read (repeatable; later files win)",
    )
    parser.add_argument(
        "--config-dir", metavar="DIR", help="read every *.conf in DIR after the files"
    )
    parser.add_argument(
        "--database", metavar="URL", help="the local cell database ([database]/connection)"
    )
    parser.add_argument(
        "--api-database", metavar="URL", help="the API database ([api_database]/connection)"
    )
    parser.add_argument(
        "--placement-database",
        metavar="URL",
        help="the Placement database (default: [placement_database]/connection, "
        "else the API database)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parser.add_argument(
        "--debug", action="store_true", help="print a traceback on unexpected errors"
    )


def _add_schema_commands(add: cli_placement.AddParser) -> None:
    """The schema commands: sync, version and null-instance-uuid-scan."""
    p = add(
        "sync",
        "Apply Nova's and Placement's schema migrations.",
        "novadb sync",
        "novadb sync --release 2024.1",
        "novadb sync --database main --revision 1acf2c98e646",
        "novadb sync --sql > upgrade.sql",
    )
    p.add_argument(
        "--database",
        dest="target",
        choices=CHOICES,
        default="all",
        help="which databases (default: all, in the order api, cell0, cells, placement)",
    )
    p.add_argument("--revision", metavar="REV", help="stop at this revision (needs --database)")
    p.add_argument(
        "--release",
        metavar="NAME",
        help="stop at this OpenStack release's heads (codename or YYYY.N)",
    )
    p.add_argument(
        "--local-cell", action="store_true", help="only [database], not cell0 and the mapped cells"
    )
    p.add_argument("--sql", action="store_true", help="print the DDL instead of running it")

    p = add(
        "version",
        "Show each database's schema revision.",
        "novadb version",
        "novadb --json version",
    )
    p.add_argument(
        "--database", dest="target", choices=CHOICES, default="all", help="which databases"
    )
    p.add_argument(
        "--local-cell", action="store_true", help="only [database], not the mapped cells"
    )

    p = add(
        "null-instance-uuid-scan",
        "Find (and delete) rows whose instance uuid is NULL.",
        "novadb null-instance-uuid-scan",
        "novadb null-instance-uuid-scan --delete --yes",
    )
    p.add_argument("--delete", action="store_true", help="delete the rows found (asks first)")
    p.add_argument("--yes", action="store_true", help="do not ask before deleting")


def _add_archive_commands(add: cli_placement.AddParser) -> None:
    """The shadow-table commands: archive and purge."""
    p = add(
        "archive",
        "Move soft-deleted rows (and the rows that hang off them) to shadow tables.",
        "novadb archive --until-complete --verbose",
        "novadb archive --before 2024-01-01 --all-cells --until-complete",
        "novadb archive --dry-run --all-cells",
        "novadb archive --until-complete --max-runtime 3000 --purge",
    )
    p.add_argument(
        "--batch-size",
        "--max-rows",
        "--max_rows",
        dest="batch_size",
        type=int,
        default=ArchiveOptions.batch_size,
        metavar="N",
        help="parent rows per transaction; without --until-complete, the rows of one run "
        f"(default {DEFAULT_BATCH_SIZE}; with --until-complete, batches as large as the "
        "row and byte bounds allow)",
    )
    p.add_argument(
        "--until-complete", action="store_true", help="repeat until nothing is left to archive"
    )
    p.add_argument(
        "--before", metavar="DATE", help="only rows deleted before DATE (e.g. 2024-01-31)"
    )
    p.add_argument("--all-cells", action="store_true", help="cell0 and every mapped cell")
    p.add_argument("--task-log", action="store_true", help="also archive task_log rows")
    p.add_argument(
        "--sleep",
        type=float,
        default=ArchiveOptions.sleep,
        metavar="SECONDS",
        help="pause between batches",
    )
    p.add_argument(
        "--purge", action="store_true", help="purge all shadow rows after archiving something"
    )
    p.add_argument(
        "--max-runtime",
        type=float,
        metavar="SECONDS",
        help="stop cleanly after the batch in progress once this much time has passed",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=ArchiveOptions.parallel,
        metavar="N",
        help="batches in flight per cell, each on its own connection (MySQL/MariaDB; "
        f"default {ArchiveOptions.parallel}; 1 with --sleep)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    p.add_argument("--verbose", action="store_true", help="print nova-manage's per-table table")

    p = add(
        "purge",
        "Delete rows from the shadow tables (older than a date, or all).",
        "novadb purge --before 2024-01-01",
        "novadb purge --all --all-cells",
        "novadb purge --before 2024-01-01 --dry-run --verbose",
    )
    p.add_argument("--before", metavar="DATE", help="delete shadow rows older than DATE")
    p.add_argument("--all", dest="purge_all", action="store_true", help="delete every shadow row")
    p.add_argument("--all-cells", action="store_true", help="cell0 and every mapped cell")
    p.add_argument(
        "--batch-size",
        type=int,
        default=PurgeOptions.batch_size,
        metavar="N",
        help=f"primary-key values per DELETE transaction (default {PurgeOptions.batch_size})",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    p.add_argument("--verbose", action="store_true", help="print a line per shadow table")


def _add_online_command(add: cli_placement.AddParser) -> None:
    """The online data migrations command: online-migrate."""
    p = add(
        "online-migrate",
        "Run Nova's and Placement's online data migrations.",
        "novadb online-migrate",
        "novadb online-migrate --max-count 1000",
        "novadb online-migrate --database placement",
        "novadb online-migrate --all-cells --batch-size 1000",
    )
    p.add_argument(
        "--max-count",
        metavar="N",
        help="one run of at most N rows, then exit 1 if work was done (default: until done)",
    )
    p.add_argument(
        "--batch-size",
        metavar="N",
        default=str(OnlineMigrateOptions.batch_size),
        help="rows per migration per batch when running until done "
        f"(default {OnlineMigrateOptions.batch_size})",
    )
    p.add_argument(
        "--database",
        dest="target",
        choices=("all", "main", "api", "placement"),
        default="all",
        help="which migrations: the cell's, the API's, Placement's, or all (default)",
    )
    p.add_argument("--all-cells", action="store_true", help="cell0 and every mapped cell")


def _add_check_command(add: cli_placement.AddParser) -> None:
    """The pre-upgrade report: check."""
    p = add(
        "check",
        "Read-only pre-upgrade report: what will bite, how bad, and the command that fixes it.",
        "novadb check",
        "novadb --config-file /etc/nova/nova.conf check",
        "novadb --json check | jq '.findings[] | select(.severity == \"blocker\")'",
    )
    p.add_argument(
        "--no-placement", action="store_true", help="skip the Placement audit's findings"
    )


def _add_demo_command(add: cli_placement.AddParser) -> None:
    """The sample cloud and flow: demo."""
    p = add(
        "demo",
        "Build a sample cloud on SQLite and run the pre-upgrade flow on it.",
        "novadb demo",
        "novadb demo --keep",
        "novadb demo --dir ./cloud --instances 5000",
    )
    p.add_argument(
        "--dir", metavar="DIR", help="where to build it (default: a new temporary directory)"
    )
    p.add_argument("--keep", action="store_true", help="leave the databases to explore afterwards")
    p.add_argument(
        "--instances", type=int, default=DEFAULT_INSTANCES, metavar="N",
        help=f"instances in the sample cell (default {DEFAULT_INSTANCES})",
    )  # fmt: skip


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config_file,
        args.config_dir,
        database=args.database,
        api_database=args.api_database,
        placement_database=args.placement_database,
        defaults_root=config.NOVA_MANAGE_ROOT,
    )


def _cmd_sync(args: argparse.Namespace, out: Output) -> int:
    options = SyncOptions(
        database=args.target,
        revision=args.revision,
        release=args.release,
        local_cell=args.local_cell,
        sql=args.sql,
    )
    result = sync(_settings(args), options, progress=out.progress)
    if args.sql and not out.as_json:
        sys.stdout.write(result.sql or "")
        return result.exit_code
    out.result(result, render.sync_table)
    return result.exit_code


def _cmd_version(args: argparse.Namespace, out: Output) -> int:
    options = VersionOptions(database=args.target, local_cell=args.local_cell)
    result = version(_settings(args), options)
    out.result(result, render.version_table)
    return result.exit_code


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _cmd_null_uuid(args: argparse.Namespace, out: Output) -> int:
    settings = _settings(args)
    found = null_instance_uuid_scan(settings, progress=out.progress)
    if not args.delete or not found.total:
        out.result(found, render.null_uuid_table)
        return found.exit_code
    if not args.yes and not _confirm(f"Delete {found.total} row(s) with a NULL instance uuid?"):
        raise NovaDbError("not confirmed; nothing was deleted (pass --yes to skip the question)")
    deleted = null_instance_uuid_scan(
        settings, NullUuidScanOptions(delete=True), progress=out.progress
    )
    out.result(deleted, render.null_uuid_table)
    return deleted.exit_code


def _cmd_check(args: argparse.Namespace, out: Output) -> int:
    options = CheckOptions(placement=not args.no_placement)
    result = check(_settings(args), options, progress=out.progress)
    out.result(result, lambda r: render.check_table(r, out.options))
    return result.exit_code


_DEMO_RENDERERS: dict[type, Callable[[Any], Any]] = {
    CheckResult: render.check_table,
    SyncResult: render.sync_table,
    OnlineResult: render.online_text,
    ArchiveResult: render.archive_summary,
    PurgeResult: lambda r: f"purged {r.total} shadow rows in {r.elapsed:.1f} s",
    AuditResult: render_placement.audit_table,
    RebuildResult: render_placement.rebuild_table,
}


def _cmd_demo(args: argparse.Namespace, out: Output) -> int:
    if args.instances < 1:
        raise BadInput("--instances must be a positive integer")

    def show(step: DemoStep) -> None:
        if out.as_json:
            return
        out.close()
        terminal = out.out.is_terminal
        if terminal:
            out.out.rule(f"$ {step.command}", align="left")
        else:  # a rule would pad the line to the console's width
            out.out.print(f"$ {step.command}", markup=False, soft_wrap=True)
        rendered = _DEMO_RENDERERS[type(step.result)](step.result)
        if isinstance(rendered, str):
            out.out.print(rendered, markup=False, crop=terminal)
        else:
            out.out.print(rendered, crop=terminal)
        out.out.print(f"exit {step.exit_code}, {step.elapsed:.1f} s", style="dim")

    result = run_demo(
        args.dir, keep=args.keep, instances=args.instances, progress=out.progress, on_step=show
    )
    out.close()
    if out.as_json:
        out.result(result, str)
        return exit_codes.OK
    out.out.print(f"The pre-upgrade flow ran in {result.elapsed:.1f} s.")
    if result.as_built is not None:
        out.out.print(
            f"The sample cloud as built (before the flow) is in {result.as_built}:\n"
            f"  novadb {result.database_options(result.as_built)} check",
            markup=False,
            soft_wrap=True,
        )
    if result.kept:
        out.out.print(
            f"The repaired cloud (after the flow) is in {result.directory}; explore it with:\n"
            f"  novadb {result.database_options()} check",
            markup=False,
            soft_wrap=True,
        )
    else:
        out.out.print("The sample cloud was removed (pass --keep to explore it).")
    return exit_codes.OK


def _cmd_archive(args: argparse.Namespace, out: Output) -> int:
    options = ArchiveOptions.from_text(
        batch_size=args.batch_size,
        until_complete=args.until_complete,
        before=args.before,
        task_log=args.task_log,
        all_cells=args.all_cells,
        sleep=args.sleep,
        purge=args.purge,
        max_runtime=args.max_runtime,
        dry_run=args.dry_run,
        parallel=args.parallel,
    )
    options.validate()
    with stop_on_ctrl_c() as stop:
        result = archive(_settings(args), options, progress=out.progress, stop=stop)
    out.close()
    if out.as_json:
        out.result(result, render.archive_text)
    else:
        if args.verbose:
            out.out.print(render.archive_text(result), markup=False)
            if result.purge is not None:
                out.out.print("Rows were archived, running purge...", markup=False)
                out.out.print(render.purge_text(result.purge), markup=False)
        out.out.print(render.archive_summary(result), markup=False)
    for failure in result.failures:
        sys.stderr.write(f"novadb: error: {failure}\n")
    return result.exit_code


def _cmd_purge(args: argparse.Namespace, out: Output) -> int:
    options = PurgeOptions.from_text(
        before=args.before,
        purge_all=args.purge_all,
        all_cells=args.all_cells,
        batch_size=args.batch_size,
        dry_run=args.dry_run,
    )
    options.validate()
    with stop_on_ctrl_c() as stop:
        result = purge(_settings(args), options, progress=out.progress, stop=stop)
    out.close()
    if out.as_json:
        out.result(result, render.purge_text)
    elif args.verbose or result.dry_run:
        out.out.print(render.purge_text(result), markup=False)
    elif result.total:
        out.out.print(f"purged {result.total} rows in {result.elapsed:.1f} s", markup=False)
    else:
        out.out.print("Purging stale soft-deleted rows and no data was deleted", markup=False)
    return result.exit_code


def _count(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadArgument(f"Must supply a positive value for {option}") from None


def _cmd_online(args: argparse.Namespace, out: Output) -> int:
    max_count = counts.max_count(args.max_count)
    batch_size = _count(args.batch_size, "--batch-size") or 0
    validate_online(max_count, batch_size, args.target)
    progress = out.progress
    if not out.as_json:
        # nova-manage's stdout, line for line: the batch size, a line per call that
        # found rows, then the table (JSON output stays JSON only).
        if max_count is None:
            out.out.print(f"Running batches of {batch_size} until complete", markup=False)

        def progress(event: Event) -> None:
            line = render.online_batch_line(event)
            if line is not None:
                out.out.print(line, markup=False, soft_wrap=True)
            out.progress(event)

    with stop_on_ctrl_c() as stop:
        options = OnlineMigrateOptions(
            max_count=max_count,
            batch_size=batch_size,
            database=args.target,
            all_cells=args.all_cells,
        )
        result = online_migrate(_settings(args), options, progress=progress, stop=stop)
    out.close()
    if out.as_json:
        out.result(result, render.online_text)
    else:
        out.out.print(render.online_text(result), markup=False)
    if result.exit_code == exit_codes.ONLINE_FAILED:
        sys.stderr.write(
            "novadb: error: Some migrations failed unexpectedly; see the messages above\n"
        )
    return result.exit_code


COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "sync": _cmd_sync,
    "version": _cmd_version,
    "null-instance-uuid-scan": _cmd_null_uuid,
    "archive": _cmd_archive,
    "purge": _cmd_purge,
    "online-migrate": _cmd_online,
    "check": _cmd_check,
    "demo": _cmd_demo,
}


def _with_settings(command: cli_placement.Command) -> Callable[[argparse.Namespace, Output], int]:
    def run(args: argparse.Namespace, out: Output) -> int:
        return command(args, out, _settings(args))

    return run


COMMANDS.update({name: _with_settings(cmd) for name, cmd in cli_placement.COMMANDS.items()})


def global_options(args: argparse.Namespace) -> str:
    """The global options the operator gave, as they would retype them, URLs masked."""
    words: list[str] = []
    for path in args.config_file:
        words += ["--config-file", path]
    if args.config_dir is not None:
        words += ["--config-dir", args.config_dir]
    for flag, url in (("--database", args.database), ("--api-database", args.api_database),
                      ("--placement-database", args.placement_database)):  # fmt: skip
        if url is not None:
            words += [flag, mask(url)]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novadb`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    out = Output(args.json, global_options(args))
    try:
        return COMMANDS[args.operation](args, out)
    except NovaDbError as exc:
        out.close()
        sys.stderr.write(f"novadb: error: {render.with_options(str(exc), out.options)}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        out.close()
        sys.stderr.write("novadb: interrupted\n")
        return exit_codes.INTERRUPTED
    except DBAPIError as exc:
        # Operations turn the faults they know into NovaDbError with their
        # context; anything else from the server still gets one line, never
        # a traceback or an "unexpected error".
        out.close()
        if args.debug:
            traceback.print_exc()
        lacking = dberrors.privilege_problem(exc)
        detail = f"{lacking}; grant it" if lacking else dberrors.message(exc)
        sys.stderr.write(
            f"novadb: error: {args.operation} stopped on a database error: {detail}; "
            "fix the cause and run the same command again (rerun with --debug for the "
            "traceback)\n"
        )
        return exit_codes.DATABASE_FAULT
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if args.debug:
            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0]
        sys.stderr.write(
            f"novadb: unexpected error: {type(exc).__name__}: {first} "
            "(rerun with --debug for the traceback)\n"
        )
        return exit_codes.UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
