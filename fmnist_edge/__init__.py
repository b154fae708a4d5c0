"""fmnist-edge: Fashion-MNIST classifiers from training to the edge.

The ``fmnist_edge`` package is the light runtime (numpy, Pillow, typer, onnxruntime /
ai-edge-litert); TensorFlow is imported only inside ``fmnist_edge.train`` and
``fmnist_edge.export``.
"""

__version__ = "0.1.0"
