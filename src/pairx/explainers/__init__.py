"""pairx.explainers: every pair explainer, behind one registry.

>>> from pairx import explainers
>>> explainers.get("gradcam")                      # doctest: +SKIP
>>> [m.name for m in explainers.available()]       # doctest: +SKIP
"""

from pairx.explainers.registry import METHODS, MethodInfo, available, create, explain, get

__all__ = ["METHODS", "MethodInfo", "available", "create", "explain", "get"]
