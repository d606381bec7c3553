# Sourced by scripts/demo and scripts/test: create .venv once, install the project with every backend.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "edgepipe: creating .venv" >&2
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.edgepipe-installed"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # exactly the pinned versions (requirements.lock, refreshed by scripts/lock), then edgepipe itself
  echo "edgepipe: installing requirements.lock and edgepipe into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet -r requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e .
  .venv/bin/python -m pip check >&2
  echo "$want" > "$stamp"
fi
# Keras 2 (tf_keras) for tests/keras2_savedmodel.py, which writes SavedModels the way TF 2.x Keras 2 did.
# Kept off the venv's path on purpose: with tf_keras importable, TF itself revives such files, so the
# tests could not see what users without it see. --no-deps: its metadata wants `tensorflow`, which would
# be installed over tensorflow-cpu.
# The pin follows tensorflow-cpu's in requirements.lock (tf_keras X.Y goes with TensorFlow X.Y).
TF_KERAS="tf_keras==2.21.0"
if [ ! -f ".venv/keras2/.pin" ] || [ "$(cat .venv/keras2/.pin)" != "$TF_KERAS" ]; then
  rm -rf .venv/keras2
  .venv/bin/python -m pip install --quiet --no-deps --target .venv/keras2 "$TF_KERAS"
  echo "$TF_KERAS" > .venv/keras2/.pin
fi
export PATH="$ROOT/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
