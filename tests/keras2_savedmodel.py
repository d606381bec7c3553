"""Writes a SavedModel the way TF 2.x Keras 2 did (`model.save(dir)` with its compiled optimizer), for tests.

Keras 2 is the `tf_keras` package, installed by scripts/_setup.sh into `.venv/keras2`, off the venv's
path, and put on the path of a child process that writes the file. With tf_keras importable, TF's own
loader imports it and revives these files; users without it (and this process) cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_WRITER = r"""
import json, sys
import numpy as np
import tf_keras as k2

npz, dest = sys.argv[1], sys.argv[2]
with np.load(npz) as d:
    x_tr, y_tr = d["x_train"][..., None] / 16.0, d["y_train"]
    x_te, y_te = d["x_test"][..., None] / 16.0, d["y_test"]
k2.utils.set_random_seed(0)
inp = k2.Input((8, 8, 1), name="image")
h = k2.layers.Conv2D(16, 3, padding="same")(inp)
h = k2.layers.BatchNormalization()(h)
h = k2.layers.Activation("relu")(h)
h = k2.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
h = k2.layers.Flatten()(h)
out = k2.layers.Dense(10, activation="softmax", name="probs")(h)
model = k2.Model(inp, out)
# OptimizerV2 (TF <= 2.10's default; `legacy` in 2.11-2.15): its slot variables go into the SavedModel
model.compile(k2.optimizers.legacy.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_tr, y_tr, epochs=EPOCHS, batch_size=32, verbose=0)
model.save(dest, save_format="tf")
print(json.dumps({"accuracy": float(model.evaluate(x_te, y_te, verbose=0)[1])}))
"""


KERAS2_PATH = Path(os.environ.get("EDGEPIPE_TF_KERAS_PATH", Path(sys.prefix) / "keras2"))


def write_keras2_saved_model(dest: Path, npz: Path, epochs: int = 6) -> float:
    """Train a small CNN with Keras 2 on the digits npz (x / 16) and save it as a SavedModel at `dest`;
    returns its accuracy on the npz's test split."""
    if not (KERAS2_PATH / "tf_keras").is_dir():
        raise RuntimeError(f"no tf_keras in {KERAS2_PATH} (scripts/_setup.sh installs it there)")
    path = os.pathsep.join(p for p in (str(KERAS2_PATH), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", _WRITER.replace("EPOCHS", str(epochs)), str(npz), str(dest)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"])
