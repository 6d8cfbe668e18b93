"""attnlab: build, train, inspect and visualize attention models in PyTorch."""

from attnlab.core import AttentionOutput

__version__ = "0.1.0"

__all__ = ["AttentionOutput", "__version__", "capture"]


def __getattr__(name: str) -> object:
    # Lazy, so that `import attnlab` does not load the viz package: `attnlab.capture(model)` records attention.
    if name == "capture":
        from attnlab.viz.capture import capture

        return capture
    raise AttributeError(f"module 'attnlab' has no attribute {name!r}")
