"""The README's Python API section runs as written (on a phone photo rendered here)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fmnist_edge import photos

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_section_runs(tmp_path, test_split, capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    photo = tmp_path / "shoe.jpg"
    images, labels = test_split
    photos.render_phone_photo(images[0], int(labels[0]), np.random.default_rng(0)).save(photo)
    exec(compile(code, "README.md", "exec"), {"PHOTO": str(photo)})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and "grabcut (28, 28) uint8" in out[2]
    assert out[3].startswith("[(") and len(eval(out[3])) == 3
