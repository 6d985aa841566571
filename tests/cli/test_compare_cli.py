"""pairx methods, pairx compare, pairx explain --method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pairx.cli.main import app

pytest.importorskip("pytorch_grad_cam", reason="the [baselines] extra is not installed")
runner = CliRunner()


def _pair(synth_dir: Path) -> list[str]:
    z = sorted((synth_dir / "images").glob("giraffe_0000/*"))
    return [str(z[0]), str(z[1])]


def test_methods_lists_the_registry() -> None:
    out = runner.invoke(app, ["methods"])
    assert out.exit_code == 0
    for name in ("pairx", "kpca", "shap", "lrp", "sift", "fullgrad"):
        assert name in out.output
    assert "map of A ignores B" in out.output


def test_compare_draws_one_row_per_method(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    res = runner.invoke(app, ["compare", *_pair(synth_dir), "--methods", "pairx,kpca,lrp,sift",
                              "-o", str(out), "--size", "128"])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    one = runner.invoke(app, ["compare", *_pair(synth_dir), "--methods", "kpca",
                              "-o", str(tmp_path / "one.png"), "--size", "128"])
    assert one.exit_code == 0
    single = np.asarray(Image.open(tmp_path / "one.png"))
    assert img.shape[0] > 3 * (single.shape[0] - 100)  # four rows are much taller than one


def test_explain_with_another_method(synth_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["explain", *_pair(synth_dir), "--method", "gradcampp",
                              "-o", str(tmp_path / "g.png"), "--json", str(tmp_path / "g.json")])
    assert res.exit_code == 0, res.output
    assert "method gradcampp at backbone.layer4" in res.output
    from pairx import load_explanation

    e = load_explanation(tmp_path / "g.json")
    assert e.method == "gradcampp" and e.signed


def test_bad_method_names(synth_dir: Path, tmp_path: Path) -> None:
    from pairx.cli.main import main

    with pytest.raises(SystemExit) as err:
        main(["compare", *_pair(synth_dir), "--methods", "kpca,zhu2", "-o",
              str(tmp_path / "x.png")])
    assert err.value.code == 2


def test_map_pictures_carry_the_warnings(synth_dir: Path) -> None:
    import pairx
    from pairx.viz.maps import render_comparison, render_maps

    z = _pair(synth_dir)
    net = pairx.load_model("timm:resnet18", size=64)
    e = pairx.explain(net, z[0], z[1], method="kpca", allow_untrained=True)
    assert e.warnings
    plain = render_maps(e, show_warnings=False)
    stamped = render_maps(e)
    assert stamped.shape[0] > plain.shape[0]
    red = (stamped[..., 0] > 150) & (stamped[..., 1] < 40) & (stamped[..., 2] < 40)
    assert red[: stamped.shape[0] - plain.shape[0]].mean() > 0.5
    both = render_comparison([e, e])
    assert ((both[..., 0] > 150) & (both[..., 1] < 40)).any()


def test_zhu_point_and_retrieve(synth_dir: Path, tmp_path: Path) -> None:
    a, b = _pair(synth_dir)
    out = tmp_path / "zp.png"
    res = runner.invoke(app, ["zhu-point", a, b, "--xy", "100", "110", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] > 400
    res = runner.invoke(app, ["zhu-retrieve", a, "--roi", "40", "40", "180", "180", "--data",
                              str(synth_dir), "--top", "3"])
    assert res.exit_code == 0, res.output
    listed = [ln for ln in res.output.splitlines() if ln.lstrip()[:1].isdigit()]
    assert len(listed) == 3 and all(Path(a).stem not in ln for ln in listed)
