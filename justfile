# Mainspring tasks. Run `just --list` to see them.

export PATH := justfile_directory() + "/.venv/bin:" + env_var('PATH')

# list the recipes
default:
    @just --list

# bring the whole system up on this machine (embedded nats-server, SQLite); Ctrl-C stops
up *ARGS:
    mainspring up {{ARGS}}

# start the system, run the example routines, show their runs, stop
demo *ARGS:
    mainspring demo {{ARGS}}

# run the test suite (unit, contract, e2e on SQLite and PostgreSQL)
test *ARGS:
    pytest {{ARGS}}

# ruff (lint and format check), mypy strict, and the import contracts (import-linter)
lint:
    ruff check libs services tests bench examples
    ruff format --check libs services tests bench examples
    mypy
    lint-imports

# regenerate docs/asyncapi.json, the bus contract (a unit test fails when it is stale)
docs:
    python -m mainspring.asyncapi > docs/asyncapi.json

# benchmarks, each beside a raw nats-py baseline measured in the same run
bench *ARGS:
    python -m bench {{ARGS}}
