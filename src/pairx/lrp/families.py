"""The model-family registry: how a network is recognised and which canonizer makes it LRP-ready.

A family registers itself where its canonizer is defined, with :func:`family_canonizer` (a
decorator on the factory, as timm's ``@register_model``) or :func:`register_family`:

* :mod:`pairx.lrp.cnn`: ``torchvision_resnet``, ``timm_resnet``, ``timm_efficientnet``,
  ``timm_convnext``, ``generic``;
* :mod:`pairx.lrp.vit`: ``timm_vit``, ``timm_vit_attnlrp``; :mod:`pairx.lrp.swin`:
  ``timm_swin``, ``timm_swin_attnlrp``; :mod:`pairx.lrp.traced`: ``onnx_graph``.

This module imports none of them; ``pairx/lrp/__init__.py`` does, so every family is registered
as soon as any part of :mod:`pairx.lrp` is imported. :data:`DETECTION_ORDER` is the one place
that says in which order :func:`detect_family` asks the families, and why. Detection uses the
block types a network contains (``isinstance``, never ``type(x) is``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pairx.core.errors import CanonizerError
from pairx.lrp.canonizer import Canonizer, ComposedCanonizer
from pairx.lrp.neck import NeckCanonizer
from pairx.models.adapter import ReIDModel

__all__ = [
    "CATCH_ALL",
    "DETECTION_ORDER",
    "FamilySpec",
    "canonizer_for",
    "check_lrp_support",
    "contains",
    "detect_family",
    "families",
    "family_canonizer",
    "never",
    "register_family",
    "unregister_family",
]

DETECTION_ORDER: tuple[str, ...] = (
    # Transformers first: a hybrid ViT (PAW-ViT's pairx.models.paw_vit.HybridStem) also contains
    # timm ResNet blocks, which the timm_resnet detector would claim.
    "timm_vit",
    "timm_swin",
    # The CNN families, each by its own block types; no network pairx knows holds blocks of two
    # of them, so their order among themselves only keeps detection as it has always been.
    "torchvision_resnet",
    "timm_resnet",
    "timm_efficientnet",
    "timm_convnext",
    # Chosen by name only (ReIDModel.family, PairX(family=...)): their detectors accept nothing.
    "timm_vit_attnlrp",
    "timm_swin_attnlrp",
    # Accepts every network (conv -> BatchNorm merged): the last family that detection reaches.
    "generic",
    # Behind "generic", so never detected: the ONNX loader names it (ReIDModel.family).
    "onnx_graph",
)
"""The order in which :func:`detect_family` asks the built-in families. A family registered
under another name (a user's, a plug-in's) is asked after the specific built-in ones and before
:data:`CATCH_ALL`, in the order of registration: its detector knows its own blocks, which the
catch-all would otherwise claim as plain convolutions."""

CATCH_ALL = "generic"
"""The family that accepts every network; registered families not in :data:`DETECTION_ORDER`
are asked before it."""

Factory = Callable[[], Canonizer]


@dataclass(frozen=True)
class FamilySpec:
    """A model family: how to recognise it and how to canonize it.

    Attributes
    ----------
    name
        Registry key (``ReIDModel.family`` may name it explicitly).
    detect
        ``net -> bool``, true when the network belongs to the family.
    factory
        Returns a fresh :class:`Canonizer` for the family (without the neck canonizer, which
        :func:`canonizer_for` always adds).
    description
        One line for listings and error messages.
    """

    name: str
    detect: Callable[[nn.Module], bool]
    factory: Factory
    description: str = ""


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec, *, overwrite: bool = False) -> None:
    """Register a model family; raises :class:`CanonizerError` on a silent overwrite."""
    if spec.name in _FAMILIES and not overwrite:
        raise CanonizerError(
            f"model family {spec.name!r} is already registered; pass overwrite=True to replace it"
        )
    _FAMILIES[spec.name] = spec


def unregister_family(name: str) -> None:
    """Remove family ``name`` (a plug-in's or a test's own family)."""
    _FAMILIES.pop(name, None)


def family_canonizer(name: str, detect: Callable[[nn.Module], bool], description: str = "",
                     *, overwrite: bool = False) -> Callable[[Factory], Factory]:
    """Decorator: register the decorated canonizer factory as family ``name``.

    >>> @family_canonizer("my_family", contains("mypackage.MyBlock"), "my networks")
    ... def my_family() -> Canonizer:  # doctest: +SKIP
    ...     return ComposedCanonizer([MyCanonizer()])
    """

    def register(factory: Factory) -> Factory:
        register_family(FamilySpec(name, detect, factory, description), overwrite=overwrite)
        return factory

    return register


def families() -> dict[str, FamilySpec]:
    """The registered families, in detection order: the built-in ones before
    :data:`CATCH_ALL` (:data:`DETECTION_ORDER`), then the others in the order they were
    registered, then the catch-all and what :data:`DETECTION_ORDER` puts behind it."""
    cut = DETECTION_ORDER.index(CATCH_ALL)
    first = [name for name in DETECTION_ORDER[:cut] if name in _FAMILIES]
    others = [name for name in _FAMILIES if name not in DETECTION_ORDER]
    last = [name for name in DETECTION_ORDER[cut:] if name in _FAMILIES]
    return {name: _FAMILIES[name] for name in first + others + last}


def contains(*class_paths: str) -> Callable[[nn.Module], bool]:
    """A detector: true when the network has a module of one of the classes (dotted paths,
    imported when asked; a class whose package is missing is skipped)."""

    def detect(net: nn.Module) -> bool:
        classes: list[type] = []
        for path in class_paths:
            module_name, _, cls = path.rpartition(".")
            try:
                classes.append(getattr(importlib.import_module(module_name), cls))
            except (ImportError, AttributeError):
                continue
        return bool(classes) and any(isinstance(m, tuple(classes)) for m in net.modules())

    return detect


def never(net: nn.Module) -> bool:
    """A detector that accepts no network (families chosen by name only)."""
    return False


def detect_family(net: nn.Module) -> str:
    """Name of the first family, in :data:`DETECTION_ORDER`, whose detector accepts ``net``."""
    for spec in families().values():
        if spec.detect(net):
            return spec.name
    raise CanonizerError("no registered model family accepts this network")


def canonizer_for(model: ReIDModel | nn.Module, family: str | None = None) -> Canonizer:
    """A fresh canonizer for ``model``: its family's canonizer followed by the neck canonizer.

    Parameters
    ----------
    model
        A :class:`ReIDModel` (``model.family`` is used when set) or a bare module.
    family
        Explicit family name, overriding detection.
    """
    net = model.net if isinstance(model, ReIDModel) else model
    if family is None and isinstance(model, ReIDModel):
        family = model.family
    name = family if family is not None else detect_family(net)
    if name not in _FAMILIES:
        raise CanonizerError(
            f"unknown model family {name!r}; registered: {', '.join(families())}. Register one "
            "with pairx.lrp.families.register_family(FamilySpec(name, detect, factory))"
        )
    return ComposedCanonizer([_FAMILIES[name].factory(), NeckCanonizer()])


def check_lrp_support(
    net: nn.Module, rule_types: tuple[type, ...], handled_types: tuple[type, ...] = ()
) -> None:
    """Raise :class:`CanonizerError` for any module with parameters but no LRP rule.

    Parameters
    ----------
    net
        The canonized network.
    rule_types
        Module types that the LRP composite gives a rule.
    handled_types
        Types whose own parameters a canonizer already accounts for (e.g. layer scales).
    """
    for name, module in net.named_modules():
        has_params = any(True for _ in module.parameters(recurse=False))
        if not has_params or isinstance(module, rule_types + handled_types):
            continue
        raise CanonizerError(
            f"module {name or '<root>'!r} of type {type(module).__module__}."
            f"{type(module).__qualname__} has parameters but no LRP rule after canonization, so "
            "its relevance would be wrong. Register a canonizer for this model family with "
            "pairx.lrp.families.register_family(FamilySpec(name, detect, factory)) that "
            "rewrites it into modules with rules (Conv, Linear, BatchNorm, Sum), and set "
            "ReIDModel.family to that name."
        )
