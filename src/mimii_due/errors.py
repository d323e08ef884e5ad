"""One exception hierarchy for the package.

Every error names the file (when there is one) and says what is wrong in words a user can act on.
The CLI turns any :class:`MimiiDueError` into a one-line message and a non-zero exit.
"""

from __future__ import annotations

from pathlib import Path


class MimiiDueError(Exception):
    """Base class of every error the package raises on purpose."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if path is not None else message)


class AudioError(MimiiDueError):
    """An audio file is empty, truncated, not a WAV file, or holds invalid samples."""


class FileNameError(MimiiDueError):
    """A file name fits none of the MIMII DUE / DCASE naming patterns."""


class LayoutError(MimiiDueError):
    """A folder is not in one of the dataset layouts the index reads."""


class ConfigError(MimiiDueError):
    """A configuration value is invalid."""


class UnknownDetectorError(ConfigError):
    """A detector name that is neither built in nor an installed plugin's."""


class DownloadError(MimiiDueError):
    """A download failed, or an archive did not match its checksum."""


class NotFittedError(MimiiDueError):
    """A detector was asked to score before it was fitted."""


class StorageError(MimiiDueError):
    """A file or folder could not be written or read (disk full, permissions, a symlink loop)."""


class UnknownModelError(MimiiDueError):
    """A clip names a machine type or section that no loaded model covers."""


class ModelError(MimiiDueError):
    """A saved model or run folder is missing, incomplete, or incompatible."""
