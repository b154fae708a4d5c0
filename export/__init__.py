"""Export: pruning, quantization-aware training, TFLite/ONNX conversion and parity checks
(needs TensorFlow: ``pip install "fmnist-edge[train]"``)."""
