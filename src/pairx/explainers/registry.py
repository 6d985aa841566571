"""The registry of pair explainers: every method registers itself where it is defined.

A method is a :class:`~pairx.explainers.base.PairExplainer` subclass that declares what it is
(``name``, ``summary``, ``requires``, ``uses_partner``, ``uses_layer``, ``matches``,
``multi_layer``) and is decorated with :func:`register`. :mod:`pairx.explainers` imports every
method module (the optional libraries are imported only when a method runs), so the registry is
complete however it is reached. ``get(name)`` gives the class (checking its optional library),
``create`` builds an explainer, ``explain`` explains one pair, and ``pairx methods`` lists
:func:`available`.

>>> from pairx.explainers import base, registry
>>> @registry.register
... class Mean(base.PairExplainer):          # doctest: +SKIP
...     name, summary, uses_layer = "mean", "mean absolute input", False
...     def _explain(self, a, b): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pairx.core.errors import InputError
from pairx.core.explanation import Explanation
from pairx.core.optional import require
from pairx.explainers.base import ImageInput, PairExplainer

__all__ = ["METHODS", "MethodInfo", "available", "create", "explain", "get", "register",
           "unregister"]

T = TypeVar("T", bound=type[PairExplainer])


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method (its class's declarations).

    Attributes
    ----------
    name
        Registry name (``pairx explain --method NAME``).
    module, attribute
        Where the explainer class lives.
    summary
        One line for ``pairx methods``.
    extra
        The pairx extra its library comes with (``None``: always available).
    uses_partner
        Whether the map of A depends on B.
    uses_layer
        Whether the method works at a layer (``layer=``).
    matches
        Whether it returns point matches.
    library
        The optional module it needs (``None``: none).
    """

    name: str
    module: str
    attribute: str
    summary: str
    extra: str | None = None
    uses_partner: bool = True
    uses_layer: bool = True
    matches: bool = False
    library: str | None = None

    @classmethod
    def of(cls, method: type[PairExplainer]) -> MethodInfo:
        """The registry entry of an explainer class."""
        library, extra = method.requires or (None, None)
        return cls(method.name, method.__module__, method.__qualname__, method.summary, extra,
                   method.uses_partner, method.uses_layer, method.matches, library)


METHODS: dict[str, MethodInfo] = {}
"""Every registered method, by name, in registration order."""

_CLASSES: dict[str, type[PairExplainer]] = {}


def register(method: T) -> T:
    """Class decorator: add the explainer class ``method`` to the registry under its ``name``.

    Raises
    ------
    ValueError
        The class has no name, or another class is registered under it.
    """
    name = method.name
    if not name:
        raise ValueError(f"{method.__qualname__} has no registry name")
    if name in _CLASSES and _CLASSES[name] is not method:
        raise ValueError(f"method {name!r} is registered already "
                         f"({_CLASSES[name].__module__}.{_CLASSES[name].__qualname__})")
    _CLASSES[name] = method
    METHODS[name] = MethodInfo.of(method)
    return method


def unregister(name: str) -> None:
    """Remove method ``name`` from the registry (a plug-in's or a test's own method)."""
    _CLASSES.pop(name, None)
    METHODS.pop(name, None)


def available() -> list[MethodInfo]:
    """The registered methods, in registry order."""
    return list(METHODS.values())


def get(name: str) -> type[PairExplainer]:
    """The explainer class of method ``name``.

    Raises
    ------
    InputError
        Unknown method (the message lists the known ones).
    ImportError
        The method's optional library is missing (the message names the extra).
    """
    cls = _CLASSES.get(name)
    if cls is None:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)} "
                         "(see `pairx methods`)")
    if cls.requires is not None:
        library, extra = cls.requires
        require(library, extra, f"the {name} method")
    return cls


def create(name: str, model: Any, *, layer: str | Sequence[str] | None = None,
           **options: Any) -> PairExplainer:
    """An explainer of method ``name`` for ``model``.

    Parameters
    ----------
    name
        Registry name.
    model
        A :class:`pairx.models.adapter.ReIDModel` or a bare ``nn.Module``.
    layer
        The layer (PAIR-X: one or several); default: the method's (PAIR-X: the model's
        recommended layer; the CAMs: the module feeding the global pooling).
    **options
        The method's own options (see its class).

    Raises
    ------
    InputError
        Unknown method, or a layer given to a method that works at none.
    """
    return get(name).create(model, layer, **options)


def explain(model: Any, image_a: ImageInput, image_b: ImageInput, *, method: str = "pairx",
            layer: str | Sequence[str] | None = None,
            **options: Any) -> Explanation | dict[str, Any]:
    """Explain why ``model`` finds ``image_a`` and ``image_b`` similar, with any method.

    Parameters
    ----------
    model
        A :class:`pairx.models.adapter.ReIDModel` (see :func:`pairx.load_model`), or a bare
        ``nn.Module`` (with preprocessed ``(1, 3, H, W)`` tensors, or ``preprocessing=``).
    image_a, image_b
        Paths, PIL images, ``(H, W, 3)`` uint8 arrays, or preprocessed ``(1, 3, H, W)`` tensors.
    method
        Registry name (``pairx methods`` lists them).
    layer
        The layer; PAIR-X also takes several (then a dict keyed by layer is returned).
    **options
        The method's options (PAIR-X: ``n_matches``, ``n_pixel_maps``...; SHAP:
        ``n_samples``...; all: ``target``, ``allow_untrained``).

    Returns
    -------
    Explanation or dict[str, PairExplanation]
    """
    options.setdefault("cache_size", 0)
    explainer = create(method, model, layer=layer, **options)
    if layer is not None and not isinstance(layer, str):
        return dict(explainer.explain_layers(image_a, image_b))
    return explainer.explain(image_a, image_b)
