#!/usr/bin/env bash
# Everything on a fresh machine takes one of two commands (each sets up ./.venv the first time):
#   bash dev.sh demo [args]    the main job: `videopure demo` (see README)
#   bash dev.sh test [args]    the whole test suite (pytest); fast loop: bash dev.sh test -m "not slow and not comfyui"
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_SPEC (what to pip-install for torch when the
# venv has none; default "torch==2.14.1 torchvision==0.29.1", e.g. TORCH_SPEC="torch torchvision" elsewhere).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

setup() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
        echo "dev.sh: installing $TORCH_SPEC into $VENV" >&2
        # shellcheck disable=SC2086
        "$VENV/bin/python" -m pip install -q $TORCH_SPEC
    fi
    local stamp="$VENV/.videopure-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "dev.sh: installing videopure (editable) with its test extras into $VENV" >&2
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        touch "$stamp"
    fi
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    demo) setup; exec "$VENV/bin/videopure" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: bash dev.sh demo [args] | bash dev.sh test [pytest args]" >&2; exit 2 ;;
esac
