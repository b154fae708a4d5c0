"""Installed size of each distribution in a virtual environment (what a device pays for an
install), from the files each distribution's RECORD lists.

    python benchmarks/install_size.py .ci-device-litert \
        --out benchmarks/results/install_size_litert.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from fmnist_edge import atomic
from fmnist_edge.benchmark import run_script
from fmnist_edge.provenance import provenance

_PROBE = """
import importlib.metadata as md, json, os
sizes = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or []:
        p = dist.locate_file(f)
        if os.path.isfile(p):
            total += os.path.getsize(p)
    sizes[dist.metadata["Name"]] = total
print(json.dumps(sizes))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    # From /, so that no project checkout in the working directory is counted.
    done = subprocess.run([str(args.venv.resolve() / "bin" / "python"), "-c", _PROBE],
                          check=True, capture_output=True, text=True, cwd="/")
    sizes = dict(sorted(json.loads(done.stdout).items(), key=lambda kv: -kv[1]))
    total = sum(sizes.values())
    atomic.write_json(args.out, {"venv": str(args.venv), "total_mb": total / 2**20,
                                 "mb_by_distribution": {k: v / 2**20 for k, v in sizes.items()},
                                 "provenance": provenance()})
    print(f"{args.venv}: {total / 2**20:.0f} MB")
    for name, size in list(sizes.items())[:8]:
        print(f"  {name:28} {size / 2**20:7.1f} MB")


if __name__ == "__main__":
    run_script(main)
