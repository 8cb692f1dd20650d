#!/usr/bin/env bash
# The two entry points of the README. Each creates the virtual environment on first use.
#   bash run.sh demo [key=value ...]   built-in data -> shards -> sweep (train + eval per epoch) -> table
#   bash run.sh test [pytest args]     the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV="${CLICKSEG_VENV:-.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.clickseg-installed"

setup() {
    if [ -x "$PY" ] && [ -f "$STAMP" ] && [ ! pyproject.toml -nt "$STAMP" ] && [ ! constraints-ci.txt -nt "$STAMP" ]; then
        return
    fi
    echo "setting up $VENV (first use)..." >&2
    python3 -m venv "$VENV"
    # The torch pair first (pinned for CI in constraints-ci.txt), then the project with its ranges.
    "$PY" -m pip install -q -c constraints-ci.txt torch torchvision
    "$PY" -m pip install -q -c constraints-ci.txt -e ".[test,demo]"
    touch "$STAMP"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    demo)
        setup
        "$PY" launch.py builtin-data --out data/builtin
        "$PY" launch.py sweep configs/demo.yaml "$@"
        ;;
    test)
        setup
        "$PY" -m pytest -q "$@"
        ;;
    *)
        echo "usage: bash run.sh demo [key=value ...] | bash run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
