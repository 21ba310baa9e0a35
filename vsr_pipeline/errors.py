"""Errors the product reports to the user as one line (``error: ...``), never as a traceback.

They subclass the matching builtins so callers can catch them naturally.
"""

from __future__ import annotations


class VsrError(Exception):
    """Base class: a problem the user can act on; its message is shown as is."""


class InputError(VsrError, ValueError):
    """The input is missing, unreadable, or not a video."""


class OutputError(VsrError, OSError):
    """The output cannot be written."""


class ConfigError(VsrError, ValueError):
    """An option has a bad value."""


class BackendUnavailable(VsrError, RuntimeError):
    """A requested backend or device is not available on this machine."""
