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


def describe(exc: BaseException) -> str:
    """One line saying what went wrong in ``exc`` (a PyAV/FFmpeg or OS error, or any other).

    FFmpeg and OS errors give their ``strerror`` (``"Connection refused"``, without the errno
    and file name ``str()`` adds); other exceptions their message. Surrounding space and a
    trailing full stop are dropped (the text is put inside a sentence); an exception without a
    message gives its type name.
    """
    text = getattr(exc, "strerror", None) or str(exc)
    return text.strip().rstrip(".") or type(exc).__name__


def words(exc: BaseException, *, first_line: bool = False) -> str:
    """The message of ``exc`` on one line (or only its first line: a traceback carried in a
    message), never its class name; without a trailing full stop; ``no details`` if empty."""
    text = str(exc).strip()
    if first_line:
        text = text.splitlines()[0] if text else ""
    return " ".join(text.split()).rstrip(".") or "no details"


def require(module: str, error: VsrError):
    """Import an optional dependency; raise ``error`` (saying what to install) where it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise error from None
