"""The `mainspring` command line: one module per noun, joined here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mainspring.apps.cli.audit import add_audit_command
from mainspring.apps.cli.common import EXIT_FAILED, EXIT_USAGE, CliError
from mainspring.apps.cli.dags import add_dag_commands
from mainspring.apps.cli.datasets import add_dataset_commands
from mainspring.apps.cli.deadletters import add_deadletter_commands
from mainspring.apps.cli.events import add_publish_command
from mainspring.apps.cli.instances import add_instance_commands
from mainspring.apps.cli.routines import add_routine_commands
from mainspring.apps.cli.runs import add_run_commands
from mainspring.apps.cli.system import add_system_commands
from mainspring.apps.cli.triggers import add_trigger_commands
from mainspring.base.settings import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mainspring",
        description="Event-driven routines on NATS JetStream.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_system_commands(commands)
    add_routine_commands(commands)
    add_run_commands(commands)
    add_dataset_commands(commands)
    add_dag_commands(commands)
    add_instance_commands(commands)
    add_trigger_commands(commands)
    add_publish_command(commands)
    add_deadletter_commands(commands)
    add_audit_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mainspring` command."""
    from nats.js.errors import NoStreamResponseError

    from mainspring.base.schedules import ScheduleError
    from mainspring.runtime.bus import BusError
    from mainspring.sdk.bundle import BundleError
    from mainspring.sdk.routine import ContractError, InputError
    from mainspring.storage.named_triggers import TriggerError
    from mainspring.storage.registry import RegistryError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (
        CliError,
        ContractError,
        InputError,
        BundleError,
        RegistryError,
        ScheduleError,
        ConfigError,
        TriggerError,
    ) as exc:
        print(f"mainspring: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoStreamResponseError:
        print(
            "mainspring: error: the bus has no stream for this subject: run `mainspring setup`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (BusError, TimeoutError, ConnectionError, RuntimeError) as exc:
        print(f"mainspring: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
