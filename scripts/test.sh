#!/usr/bin/env bash
# The test suite, as `make test` runs it, in two parts:
# 1. the model, export and training tests, two files at a time (pytest-xdist): they keep a core
#    busy each and time nothing; so do the service tests in ALONGSIDE (exports, contracts,
#    held-out sets through the API in process), which join them;
# 2. then the other service tests and the benchmark tests alone: they start servers and wait on
#    them, and those waits must not compete with an export on the other core.
# Arguments go to both parts (`make test ARGS="-k batcher"`); arguments that name tests
# (`make test ARGS=tests/service/test_batcher.py`) run just those, in one pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${TEST_WORKERS:-2}
ALONGSIDE=(
    tests/service/test_backends.py tests/service/test_gpu_contract.py
    tests/service/test_masks_exported.py tests/service/test_default_model.py
    tests/service/test_default_detector.py
)
SERIAL=(tests/bench)
for file in tests/service/test_*.py; do
    [[ " ${ALONGSIDE[*]} " == *" $file "* ]] || SERIAL+=("$file")
done

for arg in "$@"; do
    if [ -e "${arg%%::*}" ]; then
        exec "$PY" -m pytest "$@"
    fi
done

part() {  # pytest's 5 means no test was selected in this part (-k matched only the other one)
    "$PY" -m pytest "$@"
    local code=$?
    [ "$code" -eq 5 ] && return 0
    return "$code"
}
part -n "$WORKERS" --dist loadfile "${SERIAL[@]/#/--ignore=}" "$@" || exit $?
part "$@" "${SERIAL[@]}"
