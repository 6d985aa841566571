"""AMD explanations: which attributes make two sightings differ (Chen et al., ICCV 2021).

:func:`load_interpreter` loads a trained interpreter (``"default"``, shipped for the default
model, or a run folder of ``pairx amd train``) and checks it belongs to the model's weights.
:class:`AMDExplainer` is the pair explainer: for images A and B it returns an
:class:`AttributeExplanation` with the target distance ``d = sqrt(2 - 2 cos)``, the attribute
distances ``d^k`` (Eq. 3), their contributions ``r^k = d^k / sum_j d^j`` (Section 3.4) and every
attribute's attention map on both images; ``map_a``/``map_b`` are the attention maps of the top
attribute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pairx.core.errors import InputError, ModelError
from pairx.core.explanation import Explanation
from pairx.core.files import atomic_write_text, user_path
from pairx.explainers.base import PairExplainer, PreparedImage
from pairx.models.adapter import ReIDModel
from pairx.models.amd_net import AMDNet
from pairx.models.provenance import weight_digest

__all__ = ["AMDExplainer", "AttributeExplanation", "Interpreter", "interpreter_files",
           "load_interpreter", "reweighted_distance", "save_interpreter", "with_labels"]

INTERPRETER_FORMAT = 1


@dataclass(frozen=True, repr=False, kw_only=True)
class AttributeExplanation(Explanation):
    """An :class:`~pairx.core.explanation.Explanation` with AMD's attribute decomposition.

    Attributes
    ----------
    attributes
        ``M`` attribute names.
    distance
        Target distance ``d = |e_a/|e_a| - e_b/|e_b||`` (``= sqrt(2 - 2 similarity)``).
    attribute_distances
        ``(M,)`` ``d^k``; their sum is the reconstructed distance.
    attention_a, attention_b
        ``(M, H, W)`` attention maps upsampled to each model input.
    labels_a, labels_b
        ``(M,)`` bool attribute labels of each image where known, else ``None``.
    """

    attributes: tuple[str, ...] = ()
    distance: float = 0.0
    attribute_distances: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    attention_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    attention_b: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    labels_a: np.ndarray | None = None
    labels_b: np.ndarray | None = None

    @property
    def reconstructed(self) -> float:
        """``d_hat = sum_k d^k`` (Eq. 3)."""
        return float(self.attribute_distances.sum())

    @property
    def contributions(self) -> np.ndarray:
        """``(M,)`` ``r^k = d^k / sum_j d^j``."""
        total = self.attribute_distances.sum()
        return self.attribute_distances / total if total > 0 else self.attribute_distances * 0

    def ranking(self) -> list[int]:
        """Attribute indices by decreasing contribution."""
        return [int(i) for i in np.argsort(-self.attribute_distances, kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        r = self.contributions
        out["amd"] = {
            "distance": self.distance,
            "reconstructed": self.reconstructed,
            "attributes": [
                {"name": n, "distance": float(self.attribute_distances[k]),
                 "contribution": float(r[k]),
                 "label_a": None if self.labels_a is None else bool(self.labels_a[k]),
                 "label_b": None if self.labels_b is None else bool(self.labels_b[k])}
                for k, n in ((k, self.attributes[k]) for k in self.ranking())
            ],
        }
        return out

    def _npz_arrays(self) -> dict[str, np.ndarray]:
        return {**super()._npz_arrays(), "attention_a": self.attention_a,
                "attention_b": self.attention_b}


@dataclass
class Interpreter:
    """A trained AMD interpreter bound to its target model.

    Attributes
    ----------
    net
        The :class:`~pairx.models.amd_net.AMDNet` (eval mode).
    model
        The target model.
    meta
        ``interpreter.json``: attributes, shared stage, target digest, settings, history.
    """

    net: AMDNet
    model: ReIDModel
    meta: dict[str, Any]

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.net.attributes

    @torch.no_grad()
    def decompose(self, x: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, ...]:
        """``(N, D)`` embeddings, ``(N, M, D)`` attribute embeddings and ``(N, M, h, w)``
        attention maps of ``(N, 3, H, W)`` preprocessed images."""
        self.net.eval()
        outs = [self.net(x[i:i + batch_size].to(self.model.device))
                for i in range(0, len(x), batch_size)]
        return tuple(torch.cat([getattr(o, f) for o in outs])
                     for f in ("embedding", "attribute_embeddings", "attention"))


def save_interpreter(
    net: AMDNet, run: str | Path, *, target: str, target_digest: str, config: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]], wall_s: float, distance_scale: float = 1.0,
) -> Path:
    """Write ``interpreter.safetensors`` (float16) and ``interpreter.json`` into ``run``."""
    out = Path(run)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16 if v.is_floating_point() else v.dtype)
             .contiguous() for k, v in net.interpreter_state().items()}
    save_file(state, str(out / "interpreter.safetensors"))
    meta = {"format": INTERPRETER_FORMAT, "attributes": list(net.attributes),
            "share": net.share, "tau": net.head.act.tau, "target": target,
            "target_digest": target_digest, "config": dict(config), "history": list(history),
            "wall_s": round(float(wall_s), 1), "distance_scale": float(distance_scale)}
    atomic_write_text(out / "interpreter.json", json.dumps(meta, indent=1) + "\n")
    return out


def interpreter_files(spec: str | Path) -> tuple[Path, Path]:
    """The weights and metadata files of an interpreter spec (see :func:`load_interpreter`)."""
    if str(spec) == "default":
        root = resources.files("pairx") / "weights"
        return (Path(str(root / "amd_default.safetensors")),
                Path(str(root / "amd_default.json")))
    p = user_path(spec)
    if p.is_dir():
        return p / "interpreter.safetensors", p / "interpreter.json"
    return p, p.with_suffix(".json")


def load_interpreter(
    spec: str | Path = "default", model: ReIDModel | None = None, *,
    device: str | torch.device = "cpu",
) -> Interpreter:
    """Load an interpreter (``"default"`` or a run folder of ``pairx amd train``).

    Parameters
    ----------
    spec
        ``"default"`` (the interpreter shipped for the default model), a run folder, or an
        ``.safetensors`` file with its ``.json`` beside it.
    model
        The target model; default: the one the interpreter was trained for (its spec is in the
        metadata), loaded offline.
    device
        Device of a model loaded here.

    Raises
    ------
    ModelError
        Missing or unreadable files, or an interpreter trained for other weights (digest check).
    """
    from pairx.models.loaders import load_model

    weights, meta_path = interpreter_files(spec)
    if not weights.is_file() or not meta_path.is_file():
        raise ModelError(
            f"no interpreter at {spec} (looked for {weights} and {meta_path.name}): give "
            "'default', a run folder of 'pairx amd train', or its .safetensors file with the "
            ".json beside it"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        state = load_file(str(weights))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read interpreter {spec}: {exc}") from exc
    if model is None:
        model = load_model(meta["target"], device=device)
    digest = weight_digest(model)
    if digest != meta.get("target_digest"):
        raise ModelError(
            f"interpreter {spec} was trained for other weights ({meta.get('target')!r}, "
            f"{str(meta.get('target_digest'))[:19]}...) than model {model.name!r} "
            f"({digest[:19]}...); train one for this model with 'pairx amd train'"
        )
    net = AMDNet(model, meta["attributes"], share=meta["share"], tau=float(meta["tau"]))
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in state.items()},
                                              strict=False)
    bad = [k for k in missing if k.startswith(("branch.", "head."))] + list(unexpected)
    if bad:
        raise ModelError(f"interpreter {spec} does not fit model {model.name!r}: {bad[:4]}")
    net.to(model.device).eval()
    return Interpreter(net, model, meta)


def reweighted_distance(
    d: np.ndarray, d_k: np.ndarray, exclusive: np.ndarray, gamma: float = 1.0
) -> np.ndarray:
    """Eq. 12: ``d' = d + gamma * max_e d^e`` over the exclusive attributes (0 if none).

    Shapes: ``d`` ``(...)``, ``d_k`` and ``exclusive`` ``(..., M)``.
    """
    ex_max = np.where(exclusive, d_k, -np.inf).max(-1)
    return np.asarray(d + gamma * np.where(np.isfinite(ex_max), ex_max, 0.0))


class AMDExplainer(PairExplainer):
    """Pair explainer of an AMD interpreter.

    Parameters
    ----------
    interpreter
        From :func:`load_interpreter`.
    labels
        Optional attribute labels by image key (path or explicit key): ``(M,)`` bool each,
        shown next to the contributions.
    **kwargs
        As :class:`~pairx.explainers.base.PairExplainer` (``target`` must be ``"cosine"``).
    """

    name = "amd"

    def __init__(self, interpreter: Interpreter, *,
                 labels: Mapping[Any, np.ndarray] | None = None, **kwargs: Any) -> None:
        if kwargs.get("target", "cosine") != "cosine":
            raise InputError("AMD explains the cosine similarity (its distance sqrt(2 - 2 cos))")
        super().__init__(interpreter.model, **kwargs)
        self.interpreter = interpreter
        self.labels = dict(labels or {})

    def options(self) -> dict[str, Any]:
        return {**super().options(), "interpreter_share": self.interpreter.net.share,
                "attributes": list(self.interpreter.attributes)}

    def explain_attributes(self, a: Any, b: Any, *, key_a: Any = None,
                           key_b: Any = None) -> AttributeExplanation:
        """:meth:`explain`, typed: the :class:`AttributeExplanation` of one pair."""
        out = self.explain(a, b, key_a=key_a, key_b=key_b)
        assert isinstance(out, AttributeExplanation)
        return out

    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        emb, z, att = self.interpreter.decompose(torch.cat([a.x, b.x]))
        d = float((emb[0] - emb[1]).norm())
        d_k = (z[0] - z[1]).norm(dim=-1).cpu().numpy().astype(np.float32)
        size = a.x.shape[-2:]
        up = F.interpolate(att, size=size, mode="bilinear", align_corners=False).cpu().numpy()
        top = int(np.argmax(d_k))
        la, lb = self.labels.get(a.key), self.labels.get(b.key)
        return self._result(
            a, b, similarity=float((emb[0] * emb[1]).sum()), map_a=up[0, top],
            map_b=up[1, top], signed=False, result_type=AttributeExplanation,
            attributes=self.interpreter.attributes, distance=d, attribute_distances=d_k,
            attention_a=up[0].astype(np.float32), attention_b=up[1].astype(np.float32),
            labels_a=None if la is None else np.asarray(la, bool),
            labels_b=None if lb is None else np.asarray(lb, bool),
        )


def with_labels(expl: AttributeExplanation, labels_a: np.ndarray | None,
                labels_b: np.ndarray | None) -> AttributeExplanation:
    """The same explanation with attribute labels attached."""
    return replace(expl, labels_a=labels_a, labels_b=labels_b)
