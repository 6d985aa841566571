"""Exception types raised by pairx.

Every error a user can trigger with bad input derives from :class:`PairxError`, so a CLI or an
application can catch one type and print its message. Each subclass also derives from the
closest built-in exception, so callers that already catch ``ValueError`` or ``FileNotFoundError``
keep working.
"""

from __future__ import annotations


class PairxError(Exception):
    """Base class of every error pairx raises on purpose.

    Its message is always one line: line breaks that user text brings into it (a file name, a
    model spec) are shown escaped.
    """

    def __str__(self) -> str:
        return one_line(super().__str__())


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``\\n``, ``\\r``)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class InputError(PairxError, ValueError):
    """An argument or input value is invalid (wrong shape, NaN, unsupported format...)."""


class ImageReadError(PairxError, OSError):
    """An image file is missing, unreadable or in an unsupported format."""


class ImageTooLargeError(ImageReadError):
    """An image file has more pixels than the limit (a decompression bomb, or a huge photo)."""


class MissingExtraError(PairxError, ImportError):
    """An optional package is not installed; the message names the pairx extra that brings it."""


class BusyError(PairxError, RuntimeError):
    """An output folder is being written by another pairx process."""


class LayerError(PairxError, KeyError):
    """A layer name does not exist in the model or has no spatial output."""

    def __str__(self) -> str:  # KeyError would quote the message
        return one_line(str(self.args[0])) if self.args else ""


class ModelError(PairxError, ValueError):
    """A model cannot be loaded, is unsupported, or produced unusable output."""


class DatasetError(PairxError, ValueError):
    """A dataset folder or its metadata is missing, empty or malformed."""


class CanonizerError(PairxError, TypeError):
    """A module has no LRP rule or canonizer; the message says how to register one."""
