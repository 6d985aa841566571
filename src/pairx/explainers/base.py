"""The one extension point of pair explainers: :class:`PairExplainer`.

A pair explainer answers "why does the model find image A and image B similar?" for a model, a
similarity target (:mod:`pairx.core.targets`) and, for most methods, a layer. The base class
owns everything the methods share:

* the model (a :class:`pairx.models.adapter.ReIDModel`, or a bare ``nn.Module`` with a
  :class:`~pairx.models.adapter.Preprocessing` or preprocessed tensors), the refusal of
  untrained models, the model's similarity calibration;
* preprocessing, and one cache of prepared images and their embeddings (keyed by path or an
  explicit key), shared by every pair an image takes part in;
* batching over pairs (:meth:`PairExplainer.explain_pairs`, with a progress bar);
* the fields of the :class:`~pairx.core.explanation.Explanation` every method returns (model,
  frames, photographs, caveats, calibration context).

A method fills in one function, :meth:`PairExplainer._explain`, which maps two prepared images
to an explanation (built with :meth:`PairExplainer._result`). Methods that share work across
pairs (PAIR-X keeps LRP graphs alive) override :meth:`PairExplainer._explain_prepared` as well.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pairx.core.calibration import SimilarityCalibration
from pairx.core.context import ModelInfo
from pairx.core.errors import InputError, ModelError
from pairx.core.explanation import Explanation, Matches
from pairx.core.geometry import ImageFrame
from pairx.core.lru import LRUCache
from pairx.core.results import shrink_photo
from pairx.core.targets import TARGETS, SimilarityTarget, make_target
from pairx.explainers.inputs import ImageInput, PreparedImage, as_reid_model
from pairx.models.adapter import Preprocessing, ReIDModel
from pairx.models.provenance import domain_warning, require_trained, weight_digest

__all__ = ["ImageInput", "PairExplainer", "PreparedImage", "as_reid_model"]

ExplanationT = TypeVar("ExplanationT", bound=Explanation)


class PairExplainer(ABC):
    """Base class of every pair explainer.

    Parameters
    ----------
    model
        The embedding model: a :class:`ReIDModel` or a bare ``nn.Module`` mapping
        ``(B, 3, H, W)`` to ``(B, D)``.
    target
        Similarity target name (:data:`pairx.core.targets.TARGETS`): ``"cosine"`` or ``"dot"``.
    preprocessing
        Preprocessing of a bare ``nn.Module`` (or a replacement for the model's).
    cache_size
        Number of prepared images (and their embeddings) kept, least recently used first out.
    allow_untrained
        Explain a model that looks untrained instead of refusing it; every explanation then
        carries :data:`pairx.models.provenance.RANDOM_WEIGHTS_STAMP` in its ``warnings``.
    calibration
        A :class:`pairx.metrics.calibration.SimilarityCalibration` of this model, or its path;
        default: the one shipped beside the model's weights, if any (cosine target only).

    Raises
    ------
    ModelError
        The model looks untrained (and ``allow_untrained`` is not set), or the calibration
        belongs to other weights.
    InputError
        Unknown target.
    """

    # -- what the method is (read by the registry, declared once on each class) ------------
    name: ClassVar[str] = ""
    """Registry name of the method (``pairx explain --method NAME``)."""
    summary: ClassVar[str] = ""
    """One line for ``pairx methods``."""
    requires: ClassVar[tuple[str, str] | None] = None
    """``(module, extra)``: the optional library the method needs and the pairx extra that
    brings it (``None``: always available)."""
    uses_partner: ClassVar[bool] = True
    """Whether the map of image A depends on image B (False: Eigen-CAM, KPCA-CAM)."""
    uses_layer: ClassVar[bool] = True
    """Whether the method works at a layer (takes ``layer=``)."""
    matches: ClassVar[bool] = False
    """Whether its explanations carry point matches."""
    multi_layer: ClassVar[bool] = False
    """Whether it explains at several layers in one call (:meth:`explain_layers`)."""

    def __init__(
        self,
        model: ReIDModel | nn.Module,
        *,
        target: str = "cosine",
        preprocessing: Preprocessing | None = None,
        cache_size: int = 512,
        allow_untrained: bool = False,
        calibration: Any = None,
    ) -> None:
        self.model = as_reid_model(model, preprocessing)
        if target not in TARGETS:
            raise InputError(
                f"unknown similarity target {target!r}; choose one of {', '.join(TARGETS)}"
            )
        self.target = target
        self.cache_size = int(cache_size)
        self._cache: LRUCache[Hashable, PreparedImage] = LRUCache(max(0, self.cache_size))
        stamp = require_trained(
            self.model, allow=allow_untrained,
            hint="Load trained weights (load_model(..., weights=FILE)), or pass "
            "allow_untrained=True to explain it anyway (every output is stamped).",
        )
        self._stamps: tuple[str, ...] = (stamp,) if stamp else ()
        pre, digest = self.model.preprocessing, weight_digest(self.model)
        self._info = ModelInfo(self.model.name, digest, pre.size, pre.mean, pre.std,
                               pre.resize_mode)
        self.calibration = _resolve_calibration(self.model, calibration, digest)

    @classmethod
    def create(cls, model: ReIDModel | nn.Module, layer: str | Sequence[str] | None = None,
               **options: Any) -> PairExplainer:
        """The registry's constructor: ``cls(model, layer=layer, **options)``.

        A method at several layers (:attr:`multi_layer`) overrides it.

        Raises
        ------
        InputError
            A layer given to a method that works at none, or several to one that takes one.
        """
        if layer is not None:
            if not cls.uses_layer:
                raise InputError(f"method {cls.name!r} works at no layer; leave out the layer")
            if not isinstance(layer, str):
                raise InputError(f"method {cls.name!r} takes one layer name; got {layer!r}")
            options["layer"] = layer
        return cls(model, **options)

    # -- images ----------------------------------------------------------------------------
    @staticmethod
    def _key(image: ImageInput, key: Hashable | None) -> Hashable | None:
        if key is not None:
            return key
        if isinstance(image, (str, os.PathLike)):
            return os.fspath(image)
        return None

    def prepare(self, image: ImageInput, key: Hashable | None = None) -> PreparedImage:
        """Preprocess ``image`` once (cached by path or ``key``).

        Raises
        ------
        ImageReadError
            The file is missing or unreadable.
        InputError
            A tensor of the wrong shape, or with NaN values.
        """
        k = self._key(image, key)
        cached = None if k is None else self._cache.lookup(k)
        if cached is not None:
            return cached
        pre = self.model.preprocessing
        photo: np.ndarray | None
        if isinstance(image, torch.Tensor):
            x = pre(image)
            rgb = pre.denormalise(x)
            frame, photo = ImageFrame.identity(rgb.shape[:2]), None
        else:
            original, rgb, frame = pre.prepare(image)
            x = pre.normalise(rgb)
            photo = shrink_photo(original)
        device = self.model.device
        if device.type == "cuda" and x.device.type == "cpu":  # pinned: an asynchronous copy
            x = x.pin_memory().to(device, non_blocking=True)
        state = PreparedImage(x=x.to(device), rgb=rgb, frame=frame, photo=photo, key=k)
        if k is not None:
            self._cache.put(k, state)
        return state

    def embedding(self, image: PreparedImage) -> torch.Tensor:
        """``(1, D)`` embedding of a prepared image (computed once)."""
        if image.embedding is None:
            image.embedding = self.model.embed(image.x).detach()
        return image.embedding

    def embed(self, images: Iterable[ImageInput], batch_size: int = 32) -> torch.Tensor:
        """Embed images (cached ones are not recomputed).

        Returns
        -------
        torch.Tensor
            ``(N, D)`` embeddings.
        """
        states = [self.prepare(im) for im in images]
        if not states:
            raise InputError("no images to embed")
        todo = [s for s in states if s.embedding is None]
        for start in tqdm(range(0, len(todo), batch_size), desc="embed", disable=len(todo) < 64):
            chunk = todo[start:start + batch_size]
            out = self.model.embed(torch.cat([s.x for s in chunk]))
            for s, e in zip(chunk, out, strict=True):
                s.embedding = e[None]
        return torch.cat([s.embedding for s in states if s.embedding is not None])

    def target_of(self, partner: PreparedImage) -> SimilarityTarget:
        """The similarity target bound to ``partner``'s (detached) embedding."""
        return make_target(self.target, self.embedding(partner))

    def similarity(self, a: ImageInput, b: ImageInput) -> float:
        """The target's similarity of the two images."""
        sa, sb = self.prepare(a), self.prepare(b)
        return float(self.target_of(sb)(self.embedding(sa))[0])

    # -- explaining ------------------------------------------------------------------------
    def explain(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        *,
        key_a: Hashable | None = None,
        key_b: Hashable | None = None,
    ) -> Explanation:
        """Explain one pair.

        Parameters
        ----------
        image_a, image_b
            Paths, PIL images, ``(H, W, 3)`` uint8 arrays, or preprocessed ``(1, 3, H, W)``.
        key_a, key_b
            Cache keys for non-path inputs.
        """
        return self.explain_pairs([(image_a, image_b)], keys=[(key_a, key_b)], progress=False)[0]

    def explain_layers(self, image_a: ImageInput, image_b: ImageInput) -> Mapping[str, Explanation]:
        """The explanation at every layer of the method, by layer name (a method at one layer:
        one entry, under its layer or ``""``); :attr:`multi_layer` methods override it."""
        expl = self.explain(image_a, image_b)
        return {expl.layer or "": expl}

    def explain_pairs(
        self,
        pairs: Sequence[tuple[ImageInput, ImageInput]],
        *,
        keys: Sequence[tuple[Hashable | None, Hashable | None]] | None = None,
        progress: bool = True,
    ) -> list[Explanation]:
        """Explain many pairs; an image shared by several pairs is prepared once.

        Parameters
        ----------
        pairs
            ``(image_a, image_b)`` per pair.
        keys
            ``(key_a, key_b)`` cache keys per pair (``None``: the path, if any).
        progress
            Show a progress bar (for two pairs or more).
        """
        states = self._prepare_pairs(pairs, keys)
        return list(self._explain_prepared(states, progress=progress))

    def _prepare_pairs(
        self,
        pairs: Sequence[tuple[ImageInput, ImageInput]],
        keys: Sequence[tuple[Hashable | None, Hashable | None]] | None,
    ) -> list[tuple[PreparedImage, PreparedImage]]:
        """Prepared images of every pair; an image with the same path or key is one object."""
        keys = list(keys) if keys is not None else [(None, None)] * len(pairs)
        if len(keys) != len(pairs):
            raise InputError("keys must have one (key_a, key_b) entry per pair")
        memo: dict[Hashable, PreparedImage] = {}

        def state(image: ImageInput, key: Hashable | None) -> PreparedImage:
            k = self._key(image, key)
            if k is None:
                return self.prepare(image, key)
            if k not in memo:
                memo[k] = self.prepare(image, key)
            return memo[k]

        return [(state(a, ka), state(b, kb))
                for (a, b), (ka, kb) in zip(pairs, keys, strict=True)]

    def _explain_prepared(
        self, pairs: Sequence[tuple[PreparedImage, PreparedImage]], *, progress: bool
    ) -> Sequence[Explanation]:
        """Explain prepared pairs (default: one :meth:`_explain` call per pair)."""
        bar = tqdm(pairs, desc=self.name or type(self).__name__,
                   disable=not progress or len(pairs) < 2)
        return [self._explain(a, b) for a, b in bar]

    @abstractmethod
    def _explain(self, a: PreparedImage, b: PreparedImage) -> Explanation:
        """Explain one prepared pair (the one function a method fills in)."""

    # -- helpers for methods -----------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The method's settings, recorded in every explanation."""
        return {"target": self.target}

    def notes(self, a: PreparedImage, b: PreparedImage) -> tuple[str, ...]:
        """Caveats of a pair: untrained model, images outside the model's domain."""

        domain = domain_warning(self.model, [a.frame.source, b.frame.source])
        return self._stamps + ((domain,) if domain else ())

    def _result(
        self,
        a: PreparedImage,
        b: PreparedImage,
        *,
        similarity: float,
        map_a: np.ndarray | torch.Tensor | None = None,
        map_b: np.ndarray | torch.Tensor | None = None,
        signed: bool = False,
        matches: Matches | None = None,
        layer: str | None = None,
        extra: Mapping[str, Any] | None = None,
        result_type: type[ExplanationT] = Explanation,  # type: ignore[assignment]
        **fields: Any,
    ) -> ExplanationT:
        """The explanation of a pair, built the same way for every method.

        Parameters
        ----------
        a, b
            The prepared images.
        similarity
            The explained similarity.
        map_a, map_b
            ``(H, W)`` maps in the model frame (``None``: the result type derives them).
        signed, matches, layer
            As in :class:`~pairx.core.explanation.Explanation`.
        extra
            Settings of this call recorded beside :meth:`options`.
        result_type
            :class:`~pairx.core.explanation.Explanation` or a subclass (PAIR-X:
            :class:`~pairx.core.results.PairExplanation`), given its own ``fields``.
        """
        context = (self.calibration.context(similarity)
                   if self.calibration is not None and self.target == "cosine" else None)
        maps = {} if map_a is None or map_b is None else {"map_a": _as_map(map_a),
                                                           "map_b": _as_map(map_b)}
        return result_type(
            similarity=float(similarity), method=self.name, image_a=a.rgb, image_b=b.rgb,
            signed=signed, matches=matches, layer=layer, target=self.target, frame_a=a.frame,
            frame_b=b.frame, photo_a=a.photo, photo_b=b.photo, model=self._info,
            options={**self.options(), **(extra or {})}, warnings=self.notes(a, b),
            context=context, **maps, **fields,
        )


def _as_map(m: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().float().cpu().numpy()
    return np.asarray(m, dtype=np.float32)


def _resolve_calibration(model: ReIDModel, calibration: Any, digest: str) -> Any:
    """The calibration to use: the given one or path, else the one shipped with the model."""

    given = calibration if calibration is not None else model.metadata.get("calibration_file")
    if given is None:
        return None
    cal = given if isinstance(given, SimilarityCalibration) else SimilarityCalibration.load(
        str(given)
    )
    if cal.model_digest != digest:
        where = "" if isinstance(given, SimilarityCalibration) else f"{given} "
        raise ModelError(
            f"the calibration {where}was measured for model {cal.model_name!r} with other "
            f"weights ({cal.model_digest[:19]}..., this model {digest[:19]}...); run pairx "
            "calibrate for this model"
        )
    return cal
