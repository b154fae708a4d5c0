"""CI: the wheel installed runtime-only (one extra, fresh venv) runs the shipped models.

    python .ci/device_check.py VENV EXTRA DATA_DIR

Checks that the venv holds no TensorFlow and only the runtime of EXTRA, and that `predict`
(a photo and a 28x28 image), `evaluate default`, `benchmark default` and `info default` exit
0 with nothing on stderr (no TensorFlow, absl or LiteRT log lines).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

RUNTIMES = {"litert": "ai_edge_litert", "onnx": "onnxruntime"}


def main() -> None:
    venv, extra, data_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    python, exe = venv / "bin" / "python", venv / "bin" / "fmnist-edge"
    probe = ("import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) "
             "for m in ('tensorflow', 'ai_edge_litert', 'onnxruntime', 'cv2')}))")
    found = eval(subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                check=True).stdout.replace("true", "True")
                 .replace("false", "False"))
    want = {"tensorflow": False, "cv2": True, **{m: e == extra for e, m in RUNTIMES.items()}}
    assert found == want, f"{extra} install holds {found}, expected {want}"
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "shoe.jpg"
        rng = np.random.default_rng(0)
        canvas = np.full((533, 400, 3), 200, np.uint8) + rng.integers(0, 30, (533, 400, 3),
                                                                       dtype=np.uint8)
        canvas[200:330, 60:340] = (40, 40, 60)
        Image.fromarray(canvas).save(photo)
        small = Path(tmp) / "small.png"
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(small)
        for args in (["predict", str(photo), str(small)], ["info", "default"],
                     ["evaluate", "default", "--data-dir", data_dir],
                     ["benchmark", "default", "--runs", "50", "--data-dir", data_dir]):
            done = subprocess.run([exe, *args], capture_output=True, text=True)
            assert done.returncode == 0, f"{extra}: {args} failed:\n{done.stderr}"
            assert not done.stderr.strip(), f"{extra}: {args} wrote to stderr:\n{done.stderr}"
            print(f"{extra}: fmnist-edge {' '.join(args[:2])}: ok")


if __name__ == "__main__":
    main()
