"""`mainspring dataset ...`: create, append to, update and inspect datasets."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from mainspring.apps.cli.common import CliError, parse_pairs
from mainspring.apps.present import table


def dataset_command(
    action: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Run a dataset command (it works on the store directly; no services needed)."""

    def command(args: argparse.Namespace) -> int:
        from mainspring.storage.datasets import DatasetError

        try:
            return action(args)
        except DatasetError as exc:
            raise CliError(str(exc)) from None

    return command


def dataset_create(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    if (args.schema is None) == (args.from_file is None):
        raise CliError("give exactly one of --schema 'id:int64,text:string' and --from FILE")
    created = datasets.create(args.name, schema=args.schema, data=args.from_file)
    print(
        f"dataset {created.name} created at {created.uri}: version {created.version}, "
        f"{created.rows} rows, columns {', '.join(created.columns)}"
    )
    return 0


def dataset_append(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    datasets.info(args.name)  # a missing dataset is the first thing to say
    rows = datasets.read_file(args.file)
    version = datasets.append(args.name, rows)
    print(f"appended {rows.num_rows} rows to {args.name}: version {version}")
    return 0


def dataset_update(args: argparse.Namespace) -> int:
    from mainspring.storage import datasets

    if args.column:
        if not args.from_file or args.set:
            raise CliError(
                "--column COL needs --from FILE (one column, one value per row) and no --set"
            )
        version = datasets.overwrite_column(
            args.name, args.column, datasets.read_file(args.from_file)
        )
        print(f"overwrote column {args.column} of {args.name}: version {version}")
        return 0
    if not args.set:
        raise CliError("give --set column=expression (repeatable) or --column COL --from FILE")
    version = datasets.update(args.name, parse_pairs(args.set, "--set"), args.where)
    print(f"updated {args.name}: version {version}")
    return 0


def dataset_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mainspring.storage import datasets

    found = datasets.list_datasets()
    if args.json:
        print(json.dumps([asdict(d) for d in found], indent=2))
    elif found:
        rows = [{**asdict(d), "columns": ", ".join(d.columns) or d.error} for d in found]
        print(table(rows, ["name", "version", "rows", "columns", "uri"]))
    else:
        print(
            "no datasets: create one with `mainspring dataset create NAME --schema 'id:int64,text:string'`"
        )
    return 0


def dataset_show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from mainspring.storage import datasets

    versions = datasets.history(args.name)[: args.limit]
    try:
        about: dict[str, Any] = asdict(datasets.info(args.name))
    except datasets.DatasetError as exc:
        # The log is there but the table does not load (an unreadable version, say): its
        # versions still say which one and why.
        about = {"name": args.name, "error": str(exc)}
    if args.json:
        print(
            json.dumps({**about, "versions": [asdict(v) for v in versions]}, indent=2, default=str)
        )
        return 0
    if "error" in about:
        print(f"dataset {args.name}: {about['error']}\n")
    else:
        print(f"dataset {about['name']}: {about['uri']}")
        print(
            f"version {about['version']}, {about['rows']} rows, "
            f"columns {', '.join(about['columns'])}\n"
        )
    rows = [
        {
            **asdict(v),
            "at": v.at.strftime("%Y-%m-%d %H:%M:%S") if v.at else None,
            "files": f"+{v.added_files} -{v.removed_files}",
            "run_id": v.run_id,
        }
        for v in versions
    ]
    print(
        table(rows, ["version", "at", "operation", "kind", "added_rows", "files", "hop", "run_id"])
    )
    return 0


def add_dataset_commands(commands: Any) -> None:
    """`mainspring dataset create|append|update|list|show`."""
    dataset = commands.add_parser("dataset", help="create, append to, update and inspect datasets")
    actions = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a dataset (a Delta Lake table)")
    create.add_argument("name")
    create.add_argument("--schema", help="columns as name:type, e.g. 'id:int64,text:string'")
    create.add_argument(
        "--from", dest="from_file", metavar="FILE", help="initial rows (.parquet, .csv, .jsonl)"
    )
    create.set_defaults(func=dataset_command(dataset_create))
    append = actions.add_parser("append", help="append the rows of a .parquet, .csv or .jsonl file")
    append.add_argument("name")
    append.add_argument("file")
    append.set_defaults(func=dataset_command(dataset_append))
    update = actions.add_parser(
        "update", help="update rows (SQL expressions) or overwrite a column; never fires routines"
    )
    update.add_argument("name")
    update.add_argument(
        "--set", action="append", metavar="COL=EXPR", help="e.g. --set 'text=upper(text)'"
    )
    update.add_argument("--where", default=None, help="SQL predicate, e.g. 'id > 10'")
    update.add_argument("--column", default=None, help="overwrite this column with --from FILE")
    update.add_argument(
        "--from", dest="from_file", metavar="FILE", help="one column, one value per row"
    )
    update.set_defaults(func=dataset_command(dataset_update))
    listing = actions.add_parser("list", help="datasets under the dataset root")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=dataset_command(dataset_list))
    show = actions.add_parser("show", help="a dataset's versions: operation, kind, rows added")
    show.add_argument("name")
    show.add_argument("--limit", type=int, default=50)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=dataset_command(dataset_show))
