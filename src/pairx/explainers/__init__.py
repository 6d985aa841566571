"""pairx.explainers: every pair explainer, behind one registry.

Each method registers itself where it is defined (:func:`~pairx.explainers.registry.register`);
importing this package imports every method module, in the order ``pairx methods`` lists them
(PAIR-X first, then the baselines of the paper's Figure 2 and supplement, then Zhu et al.).
The optional libraries (pytorch-grad-cam, captum, LightGlue) are imported only when a method
runs.

>>> from pairx import explainers
>>> explainers.get("gradcam")                      # doctest: +SKIP
>>> [m.name for m in explainers.available()]       # doctest: +SKIP
"""

# The registration order, which is the order `pairx methods` lists (keep it; isort would sort it):
# isort: off
from pairx.explainers import pairx  # PAIR-X
from pairx.explainers import cam  # the twelve CAMs of the supplement's Fig. 9
from pairx.explainers import shap  # Kernel SHAP
from pairx.explainers import input_lrp  # whole-image LRP
from pairx.explainers import keypoints  # SIFT, then LightGlue
from pairx.explainers import zhu  # Zhu et al. 2021
# isort: on
from pairx.explainers.registry import METHODS, MethodInfo, available, create, explain, get

__all__ = ["METHODS", "METHOD_MODULES", "MethodInfo", "available", "create", "explain", "get"]

METHOD_MODULES = (pairx, cam, shap, input_lrp, keypoints, zhu)
"""The method modules, in registration order."""
