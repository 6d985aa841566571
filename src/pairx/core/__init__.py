"""The lowest layer: errors, result types and their files, image files and frames, targets.

Importing the package registers every result type that writes records of its own (see
:data:`pairx.core.explanation.RECORD_TYPES`), so that
:func:`~pairx.core.explanation.load_explanation` reads any explanation file back as its class.
"""

from pairx.core.results import PairExplanation

__all__ = ["PairExplanation"]
