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

# lythonic's scheduled-triggers tutorial in embedded mode, in one process (about 30 s: it waits for a 10-second poll trigger)
tutorial *ARGS:
    cd examples/market_summary && python run_tutorial.py {{ARGS}}

# run the test suite (unit, contract, e2e on SQLite and PostgreSQL), two test files at a time
test *ARGS:
    pytest -n 2 --dist loadfile {{ARGS}}

# the long chaos run: at least 2,000 mixed triggers under kills and pauses (ARGS go to pytest)
chaos *ARGS:
    MAINSPRING_CHAOS_SECONDS=120 MAINSPRING_CHAOS_MIN_TRIGGERS=2000 MAINSPRING_CHAOS_MAX_SECONDS=900 pytest -m chaos -s tests/chaos {{ARGS}}

# the long fuzz: random and malformed messages on every consumed subject of a running system
fuzz *ARGS:
    MAINSPRING_FUZZ_EXAMPLES=5000 pytest tests/e2e/test_fuzz.py {{ARGS}}

# ruff (lint and format check), mypy strict, and the import contracts (import-linter)
lint:
    ruff check libs services tests bench examples
    ruff format --check libs services tests bench examples
    mypy
    lint-imports

# regenerate docs/asyncapi.json (the bus contract) and deploy/nats/permissions.conf (its users); unit tests fail when they are stale
docs:
    python -m mainspring.apps.asyncapi > docs/asyncapi.json
    python -m mainspring.contract.permissions > deploy/nats/permissions.conf

# benchmarks, each beside a raw nats-py baseline measured in the same run
bench *ARGS:
    python -m bench {{ARGS}}
