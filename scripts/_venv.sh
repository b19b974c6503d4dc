# Sourced by scripts/test and scripts/demo: make .venv (Python 3.11 by default)
# with autodbg installed editable (its .pth in site-packages) and torch 2.13.0.
# Usage: . scripts/_venv.sh [EXTRA ...]   (EXTRA: optional dependency groups, e.g. test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${AUTODBG_PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "scripts: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
extras=$(IFS=,; echo "torch${*:+,$*}")
echo "scripts: installing autodbg[$extras] and torch==2.13.0 into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" "torch==2.13.0"
