"""Inference runtimes behind one small interface.

``load(path)`` dispatches on the file suffix to a backend; each backend imports its library
inside its constructor, so importing this package loads neither TensorFlow nor onnxruntime.
Every runtime maps ``uint8[N, 28, 28]`` images to ``float32[N, 10]`` logits.
"""

from __future__ import annotations

from fmnist_edge.runtime.base import ModelFileError, Runtime, load, usable_cores

__all__ = ["ModelFileError", "Runtime", "load", "usable_cores"]
