"""Property-based fuzzing of the command line: any options give success or one clean error.

Fast commands only (``synth`` into temporary folders at tiny sizes, ``layers``, ``merge``,
``explain`` with inputs that fail before a model loads), through typer's ``CliRunner``: the run
ends with success, a usage error (exit 2), or a :class:`~pairx.core.errors.PairxError` whose
message is one line; never another exception. A small budget by default; a larger one under
``-m slow``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pairx.cli.main import app
from pairx.core.errors import PairxError
from pairx.core.images import set_max_pixels

FAST = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _default_pixel_limit() -> Iterator[None]:
    """``--max-pixels`` sets a process-wide limit: every test leaves the default behind."""
    yield
    set_max_pixels(None)

numbers = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(["63", "64", "65", "1e3", "nan", "inf", "-inf", "0x10", "", " ",
                     "1" + "0" * 40, "-0", "3.5", "²", "٣"]),
)
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=20)


def check(args: list[str]) -> None:
    """Run ``pairx ARGS``: success, a usage error or one clean PairxError line."""
    result = CliRunner().invoke(app, args)
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        assert result.exit_code in (0, 2), (args, result.output)
        assert "Traceback" not in result.output
        return
    assert isinstance(exc, PairxError), (args, repr(exc))
    assert str(exc) and "\n" not in str(exc).strip(), (args, str(exc))


def synth_args(tmp: Path) -> st.SearchStrategy[list[str]]:
    option = st.sampled_from(["--individuals", "--sightings", "--size", "--seed",
                              "--test-fraction", "--workers"])
    species = st.one_of(st.sampled_from(["zebra", "giraffe", "unicorn", ",", "zebra,,zebra"]),
                        texts)
    out = st.sampled_from(["new", "file", "file/below", "."])
    return st.tuples(st.lists(st.tuples(option, numbers), max_size=3), species, out).map(
        lambda t: ["synth", "-o", str(tmp / t[2]), "--species", t[1] or "giraffe",
                   "--size", "64", "--individuals", "1", "--sightings", "1", "-q",
                   *[x for pair in t[0] for x in pair]])


def fuzz(strategy: Callable[[Path], st.SearchStrategy[list[str]]],
         budget: settings) -> Callable[[], None]:
    """A test running ``check`` on ``strategy``'s command lines in a fresh folder each time."""
    def prepare_and_check(args_of: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "file").write_text("not a folder")
            (root / "junk.png").write_bytes(b"\x89PNG not really")
            check(args_of(root))

    @budget
    @given(st.data())
    def run(data: st.DataObject) -> None:
        prepare_and_check(lambda root: data.draw(strategy(root)))

    return run


def layers_args(tmp: Path) -> st.SearchStrategy[list[str]]:
    spec = st.one_of(st.sampled_from(["timm:", "onnx:", "onnx:missing.onnx", "torchvision:x",
                                      "paw-vit:extra", str(tmp / "file"), str(tmp)]), texts)
    return st.tuples(spec, st.lists(st.sampled_from(["--size", "--device"]), max_size=1),
                     numbers).map(lambda t: ["layers", t[0] or "nope",
                                             *[x for o in t[1] for x in (o, t[2])]])


def merge_args(tmp: Path) -> st.SearchStrategy[list[str]]:
    source = st.sampled_from([str(tmp), str(tmp / "file"), str(tmp / "missing"), "", "-"])
    return st.tuples(st.lists(source, min_size=0, max_size=3),
                     st.sampled_from(["out", "file", "file/x"]), st.lists(texts, max_size=2)
                     ).map(lambda t: ["merge", *t[0], "-o", str(tmp / t[1]),
                                      *[x for n in t[2] for x in ("--name", n)]])


def explain_args(tmp: Path) -> st.SearchStrategy[list[str]]:
    image = st.sampled_from([str(tmp / "junk.png"), str(tmp / "missing.jpg"), str(tmp),
                             str(tmp / "file")])
    option = st.sampled_from(["--n-matches", "--n-pixel-maps", "--top", "--max-pixels",
                              "--method", "--arrange", "--precision", "--device", "--size"])
    out = st.sampled_from(["x.png", "x.jpg", "file", "."])
    return st.tuples(image, image, st.lists(st.tuples(option, st.one_of(numbers, texts)),
                                            max_size=3), out).map(
        lambda t: ["explain", t[0], t[1], "-o", str(tmp / t[3]),
                   *[x for pair in t[2] for x in pair]])


test_fuzz_synth = fuzz(synth_args, FAST)
test_fuzz_layers = fuzz(layers_args, FAST)
test_fuzz_merge = fuzz(merge_args, FAST)
test_fuzz_explain = fuzz(explain_args, FAST)


@pytest.mark.slow
@pytest.mark.fuzz_budget
@pytest.mark.parametrize("strategy", [synth_args, layers_args, merge_args, explain_args],
                         ids=["synth", "layers", "merge", "explain"])
def test_fuzz_cli_at_length(strategy: Callable[[Path], st.SearchStrategy[list[str]]]) -> None:
    fuzz(strategy, SLOW)()
