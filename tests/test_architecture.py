"""docs/architecture.md's worked examples run as written (one per extension point)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)```", re.S)


def _examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text(encoding="utf-8")))


def test_the_doc_has_an_example_for_every_extension_point() -> None:
    assert set(_examples()) == {"method", "spec", "family", "command", "route"}


def _run(name: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"architecture_example_{name}", **names}
    exec(compile(_examples()[name], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


def test_method_example() -> None:
    from pairx.explainers import registry

    try:
        _run("method")
    finally:
        registry.unregister("mean-abs-input")
    assert "mean-abs-input" not in registry.METHODS


def test_spec_example() -> None:
    from pairx.models import loaders

    try:
        _run("spec")
        assert "'mylab:WIDTH' (the lab's toy network)" in loaders.spec_forms()
    finally:
        loaders.unregister_spec("mylab")


def test_family_example() -> None:
    from pairx.lrp import families

    try:
        _run("family")
    finally:
        families.unregister_family("lab_gated")
    assert "lab_gated" not in families.families()


def test_command_example() -> None:
    _run("command")


def test_route_example(fresh_project: Path) -> None:
    pytest.importorskip("fastapi")
    _run("route", project_dir=fresh_project)
