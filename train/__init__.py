"""Training (needs TensorFlow: ``pip install "fmnist-edge[train]"``).

Import submodules explicitly, e.g. ``from fmnist_edge.train import trainer``; importing this
package alone loads nothing heavy.
"""
