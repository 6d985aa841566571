"""Layer-wise relevance propagation for re-identification models: rules, canonizers, engines.

* :mod:`.convention`: how relevance rides on autograd (the two gradient conventions);
* :mod:`.rule_modules`: the modules canonizers swap in, each with one LRP rule;
* :mod:`.canonizer`: the reversible model edit; :mod:`.neck`: the GeM / BatchNorm neck;
* :mod:`.families`: the family registry (detection order, ``canonizer_for``);
* the families, each registered where its canonizer is defined: :mod:`.cnn`, :mod:`.vit`,
  :mod:`.swin` (AttnLRP's rule: :mod:`.attnlrp`), :mod:`.traced` (graphs imported from ONNX);
* the engines: :mod:`.zennit_engine` (rule hooks), :mod:`.gradient_engine` (modified
  gradients; its rules: :mod:`.surrogates`) and its cone replay (:mod:`.cone`,
  :mod:`.cone_nodes`).

Importing this package imports the family modules, so :func:`.families.detect_family` and
:func:`.families.canonizer_for` see every family however :mod:`pairx.lrp` is entered.
"""

from pairx.lrp import cnn, swin, traced, vit

__all__ = ["cnn", "swin", "traced", "vit"]
