"""mimii-due: unsupervised anomalous sound detection under domain shift (MIMII DUE)."""

__version__ = "0.1.0"

from mimii_due.errors import AudioError, LayoutError, MimiiDueError  # noqa: E402

__all__ = ["__version__", "MimiiDueError", "AudioError", "LayoutError"]
