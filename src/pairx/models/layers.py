"""Layer access by ``get_submodule`` name, and discovery of layers usable by PAIR-X.

PAIR-X matches per-position descriptors of an intermediate activation, so a usable layer is a
module whose output is a spatial ``(B, C, h, w)`` tensor. :func:`candidate_layers` finds them
with one dry forward pass; :func:`get_layer` resolves a name and raises a :class:`LayerError`
that lists the valid names when it does not exist.

Token models (timm Vision Transformers) have ``(B, N, C)`` layer outputs: ``N`` is the prefix
tokens (class, registers) followed by the patch grid in row-major order. Their layers are used
through :class:`TokenGrid`: prefix tokens dropped, patch tokens reshaped to ``(B, C, h, w)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from pairx.core.errors import LayerError
from pairx.models.adapter import ReIDModel

__all__ = [
    "ChannelsLastGrid",
    "LayerInfo",
    "TokenGrid",
    "TokenLayout",
    "candidate_layers",
    "capture_layers",
    "get_layer",
    "require_spatial_output",
    "token_grid",
]


@dataclass(frozen=True)
class LayerInfo:
    """A module with a spatial output.

    Attributes
    ----------
    name
        ``get_submodule`` key relative to :attr:`ReIDModel.net`.
    channels
        ``C`` of the module's ``(B, C, h, w)`` output.
    grid
        ``(h, w)`` of that output for the model's preprocessing size.
    """

    name: str
    channels: int
    grid: tuple[int, int]


def _net(model: ReIDModel | nn.Module) -> nn.Module:
    return model.net if isinstance(model, ReIDModel) else model


@dataclass(frozen=True)
class TokenGrid:
    """How a ViT's ``(B, N, C)`` outputs map to a ``(B, C, h, w)`` patch grid.

    Attributes
    ----------
    prefix
        Number of leading non-patch tokens (class and register tokens).
    grid
        ``(h, w)`` of the patch grid for the model's input size.
    """

    prefix: int
    grid: tuple[int, int]

    def fits(self, output: object) -> bool:
        """Whether ``output`` is a ``(B, prefix + h * w, C)`` token tensor."""
        h, w = self.grid
        return (isinstance(output, torch.Tensor) and output.dim() == 3
                and output.shape[1] == self.prefix + h * w)

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` tokens -> ``(B, C, h, w)`` patch grid (a differentiable view)."""
        b, _, c = tokens.shape
        return tokens[:, self.prefix:].transpose(1, 2).reshape(b, c, *self.grid)

    def to_tokens(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The prefix tokens of ``tokens`` followed by the ``(B, C, h, w)`` ``grid``."""
        patches = grid.flatten(2).transpose(1, 2)
        return torch.cat([tokens[:, : self.prefix], patches], dim=1) if self.prefix else patches

    def allows_nchw(self, output: torch.Tensor) -> bool:
        """Whether a 4-d output is a ``(B, C, h, w)`` map (the patch embedding's convolution)
        rather than an attention tensor ``(B, heads, N, d)``."""
        return tuple(output.shape[2:]) == self.grid

    def describe(self) -> str:
        h, w = self.grid
        return f"(B, {self.prefix} + {h} * {w}, C) tokens on the {h} x {w} patch grid"


@dataclass(frozen=True)
class ChannelsLastGrid:
    """How a Swin Transformer's channels-last ``(B, h, w, C)`` stage outputs map to
    ``(B, C, h, w)``.

    Attributes
    ----------
    shapes
        ``(h, w, C)`` of each stage for the model's input size.
    """

    shapes: frozenset[tuple[int, int, int]]

    def fits(self, output: object) -> bool:
        """Whether ``output`` is a ``(B, h, w, C)`` stage tensor."""
        return (isinstance(output, torch.Tensor) and output.dim() == 4
                and tuple(output.shape[1:]) in self.shapes)

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, h, w, C)`` -> ``(B, C, h, w)`` (a differentiable view)."""
        return tokens.permute(0, 3, 1, 2)

    def to_tokens(self, tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> contiguous ``(B, h, w, C)``."""
        return grid.permute(0, 2, 3, 1).contiguous()

    def allows_nchw(self, output: torch.Tensor) -> bool:
        """Whether a 4-d output is a ``(B, C, h, w)`` map of a stage's shape (the patch
        embedding's convolution)."""
        c, h, w = (int(v) for v in output.shape[1:])
        return (h, w, c) in self.shapes

    def describe(self) -> str:
        sizes = ", ".join(f"{h}x{w}x{c}" for h, w, c in sorted(self.shapes, reverse=True))
        return f"(B, h, w, C) stage outputs ({sizes})"


TokenLayout = TokenGrid | ChannelsLastGrid
"""The ways :func:`token_grid` maps a token model's layer outputs to a grid."""


def _swin_layout(module: nn.Module) -> ChannelsLastGrid | None:
    info = getattr(module, "feature_info", None)
    embed = getattr(module, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if getattr(module, "output_fmt", None) != "NHWC" or not info or size is None:
        return None
    shapes = frozenset((int(size[0]) // int(f["reduction"]), int(size[1]) // int(f["reduction"]),
                        int(f["num_chs"])) for f in info)
    return ChannelsLastGrid(shapes)


def token_grid(model: ReIDModel | nn.Module) -> TokenLayout | None:
    """How the layer outputs of a token model (a timm ``VisionTransformer`` or
    ``SwinTransformer`` inside ``model``) map to a grid; ``None`` for a CNN."""
    for module in _net(model).modules():
        swin = _swin_layout(module)
        if swin is not None:
            return swin
        embed = getattr(module, "patch_embed", None)
        size = getattr(embed, "grid_size", None)
        prefix = getattr(module, "num_prefix_tokens", None)
        if size is not None and isinstance(prefix, int):
            return TokenGrid(prefix, (int(size[0]), int(size[1])))
    return None


def _spatial_info(name: str, output: object, tokens: TokenLayout | None) -> LayerInfo | None:
    if tokens is not None and tokens.fits(output):
        assert isinstance(output, torch.Tensor)
        grid = tokens.to_grid(output)
        return LayerInfo(name, int(grid.shape[1]), (int(grid.shape[2]), int(grid.shape[3])))
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        return None
    if tokens is not None and not tokens.allows_nchw(output):
        return None  # inside attention: (B, heads, N, d) or (B, heads, N, N)
    return LayerInfo(name, int(output.shape[1]), (int(output.shape[2]), int(output.shape[3])))


def candidate_layers(
    model: ReIDModel | nn.Module, input_size: tuple[int, int] | None = None
) -> list[LayerInfo]:
    """List every module whose output is a ``(B, C, h, w)`` tensor.

    One dry forward pass with a zero image records the output shape of every named module; the
    hooks are always removed and the training mode is restored.

    Parameters
    ----------
    model
        A :class:`ReIDModel` (its preprocessing size is used) or a bare module.
    input_size
        ``(H, W)`` of the dry input; required for a bare module, defaults to the model's size.

    Returns
    -------
    list[LayerInfo]
        In the order the modules were first executed.
    """
    net = _net(model)
    if input_size is None:
        if not isinstance(model, ReIDModel):
            raise LayerError("candidate_layers needs input_size=(H, W) for a bare nn.Module")
        input_size = model.preprocessing.size
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    tokens = token_grid(net)
    found: dict[str, LayerInfo] = {}
    handles = []

    def make_hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            info = None if name in found else _spatial_info(name, output, tokens)
            if info is not None:
                found[name] = info

        return hook

    was_training = net.training
    try:
        for name, module in net.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return list(found.values())


def _suggest(net: nn.Module, name: str, model: ReIDModel | nn.Module) -> str:
    """A short hint: the closest valid names and where to find the rest."""
    try:
        names = [info.name for info in candidate_layers(model)] if isinstance(
            model, ReIDModel
        ) else [n for n, _ in net.named_modules() if n]
    except Exception:  # the listing is only a hint; never mask the original error
        names = [n for n, _ in net.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"{hint} {len(names)} layers have a spatial output: list them with "
        "`pairx layers MODEL` (or pairx.models.layers.candidate_layers)."
    )


def get_layer(model: ReIDModel | nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (a ``get_submodule`` key of ``model.net``).

    Raises
    ------
    LayerError
        The name does not exist; the message lists the valid candidate names.
    """
    net = _net(model)
    if not isinstance(name, str) or not name:
        raise LayerError(f"a layer name must be a non-empty string; got {name!r}." + _suggest(
            net, str(name), model
        ))
    try:
        return net.get_submodule(name)
    except AttributeError:
        raise LayerError(
            f"layer {name!r} does not exist in model "
            f"{getattr(model, 'name', type(net).__name__)!r}." + _suggest(net, name, model)
        ) from None


def require_spatial_output(name: str, output: object, model: ReIDModel | nn.Module) -> torch.Tensor:
    """Check that a captured layer output is a ``(B, C, h, w)`` tensor.

    Raises
    ------
    LayerError
        The layer was not executed or its output is not spatial; the message lists valid names.
    """
    if output is None:
        raise LayerError(
            f"layer {name!r} was not executed by the model's forward pass."
            + _suggest(_net(model), name, model)
        )
    tokens = token_grid(model)
    if _spatial_info(name, output, tokens) is None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        need = (f"{tokens.describe()} (e.g. a block's output)" if tokens is not None
                else "a convolutional (B, C, h, w) feature map")
        raise LayerError(
            f"layer {name!r} has no spatial output (it returns {shape}); PAIR-X needs {need}."
            + _suggest(_net(model), name, model)
        )
    assert isinstance(output, torch.Tensor)
    return output


@contextmanager
def capture_layers(
    model: ReIDModel | nn.Module, layers: Sequence[str], *, cut: bool = False,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named layers during forward passes inside the block.

    With ``cut=True`` the first of the layers to run hands its consumers its output detached
    (a new leaf that requires grad): the forward pass below it records no autograd graph,
    which backward passes that stop at the layers do not need. The values are the same; a
    layer that does not run downstream of the cut then has an output without grad history
    (callers check ``requires_grad`` and rerun without the cut). ``gather`` (with ``cut``): a
    function from the detached cut output ``(B, ...)`` to the batch ``(B', ...)`` the layers
    above the cut see (e.g. each image below the cut computed once, however many pairs it is
    in, or activations of earlier passes put together with this pass's); where ``B' != B``, a
    tensor from below the cut used above it no longer fits and the forward pass raises.

    Yields
    ------
    dict[str, torch.Tensor]
        Filled by the forward pass: layer name -> its output. Hooks are always removed.

    Raises
    ------
    LayerError
        A name is not a module of the model (the message lists the valid ones).
    """
    found: dict[str, torch.Tensor] = {}
    handles = []
    tokens = token_grid(model)
    try:
        for name in layers:
            module = get_layer(model, name)

            def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> object:
                if not isinstance(out, torch.Tensor):
                    found[name] = out  # type: ignore[assignment]
                    return None
                first_cut = cut and not found
                if first_cut:
                    out = out.detach()
                    if gather is not None:
                        out = gather(out)
                if tokens is not None and tokens.fits(out):
                    # the grid view is what the layers above run on, so gradients reach it
                    grid = tokens.to_grid(out)
                    if first_cut:
                        grid = grid.detach().requires_grad_(True)
                    found[name] = grid
                    return tokens.to_tokens(out, grid)
                if first_cut:
                    out = out.requires_grad_(True)
                found[name] = out
                return out if first_cut else None

            handles.append(module.register_forward_hook(hook))
        yield found
    finally:
        for handle in handles:
            handle.remove()
