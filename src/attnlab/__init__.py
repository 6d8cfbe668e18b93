"""attnlab: build, train, inspect and visualize attention models in PyTorch."""

from attnlab.core import AttentionOutput

__version__ = "0.1.0"

__all__ = ["AttentionOutput", "__version__"]
