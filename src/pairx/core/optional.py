"""Import heavy optional dependencies lazily, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from pairx.core.errors import MissingExtraError


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise an ImportError telling the user which extra installs it.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"lightglue"``.
    extra
        Name of the pairx extra that provides it, e.g. ``"lightglue"``.
    purpose
        Optional short description of what needs the module, used in the message.

    Returns
    -------
    ModuleType
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" for {purpose}" if purpose else ""
        raise MissingExtraError(
            f"pairx needs the optional package {module!r}{what}; "
            f"install it with: pip install 'pairx[{extra}]'"
        ) from exc
