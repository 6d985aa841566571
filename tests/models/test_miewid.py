"""MiewID native loader: a randomly initialised checkpoint written with the published key names.

The source network below is written from MiewID's published description (timm
``efficientnetv2_rw_m`` with identity classifier/global pool, GeM exponent ``pooling.p``,
``BatchNorm1d(2152)`` neck ``bn``, an ArcFace head ``final`` used only in training), so the test
checks the key mapping against an independent model, not against pairx's own ``ReIDNet``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from pairx.core.errors import ModelError
from pairx.models.loaders import load_model
from pairx.models.miewid import (
    MIEWID_DIM,
    MIEWID_SIZE,
    convert_miewid_state_dict,
    load_miewid,
    resolve_miewid_weights,
)


class PublishedMiewId(nn.Module):
    """The checkpoint layout of the published MiewID (module names as in its state dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model("efficientnetv2_rw_m", pretrained=False)
        self.backbone.classifier = nn.Identity()
        self.backbone.global_pool = nn.Identity()
        self.pooling_p = nn.Parameter(torch.tensor([2.7]))
        self.bn = nn.BatchNorm1d(MIEWID_DIM)
        self.final = nn.Linear(MIEWID_DIM, 11, bias=False)  # ArcFace weights, training only

    def state_dict_published(self) -> dict[str, torch.Tensor]:
        sd = {k: v for k, v in self.state_dict().items() if k != "pooling_p"}
        sd["pooling.p"] = self.pooling_p.detach()
        return {k: v.detach().clone().contiguous() for k, v in sd.items()}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features(x).double()
        p = self.pooling_p.double()
        pooled = f.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
        bn = self.bn
        out = (pooled - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
        return out * bn.weight.double() + bn.bias.double()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[PublishedMiewId, Path, Path]:
    """(source model, weights file, fake Hugging Face cache hub folder)."""
    torch.manual_seed(0)
    src = PublishedMiewId().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        src.bn.running_mean.copy_(torch.randn(MIEWID_DIM, generator=g) * 0.05)
        src.bn.running_var.copy_(torch.rand(MIEWID_DIM, generator=g) + 0.5)
        src.bn.weight.copy_(torch.rand(MIEWID_DIM, generator=g) + 0.5)
        src.bn.bias.copy_(torch.randn(MIEWID_DIM, generator=g) * 0.1)
    root = tmp_path_factory.mktemp("miewid")
    # Hugging Face cache layout: blobs hold the data, snapshots/<rev>/ symlink to them.
    hub = root / "hub"
    repo = hub / "models--conservationxlabs--miewid-msv2"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    blob = repo / "blobs" / "5f3a9c"
    save_file(src.state_dict_published(), str(blob))
    (repo / "snapshots" / rev / "model.safetensors").symlink_to(Path("../../blobs/5f3a9c"))
    (repo / "snapshots" / rev / "config.json").write_text("{}")
    return src, blob, hub


def test_convert_maps_published_names() -> None:
    t = torch.zeros(1)
    out = convert_miewid_state_dict(
        {
            "module.backbone.conv_stem.weight": t,
            "pooling.p": t,
            "bn.weight": t,
            "final.weight": t,
            "backbone.classifier.weight": t,
        }
    )
    assert set(out) == {"backbone.conv_stem.weight", "global_pool.p", "bn.weight"}
    # Hub exports that store the GeM exponent under the backbone's global pool.
    p = torch.tensor([2.5])
    out = convert_miewid_state_dict({"backbone.global_pool.p": p, "final.kernel.weight": t})
    assert set(out) == {"global_pool.p"} and out["global_pool.p"] is p
    both = convert_miewid_state_dict({"backbone.global_pool.p": t, "pooling.p": p})
    assert set(both) == {"global_pool.p"} and both["global_pool.p"] is p


def test_hf_cache_folder_loads_and_matches_source(
    published: tuple[PublishedMiewId, Path, Path],
) -> None:
    src, _, hub = published
    # Any of: the hub folder, the repo folder, the snapshot folder.
    repo = hub / "models--conservationxlabs--miewid-msv2"
    snapshot = next((repo / "snapshots").iterdir())
    for folder in (hub, repo, snapshot):
        assert resolve_miewid_weights(folder).resolve() == (repo / "blobs" / "5f3a9c").resolve()
    model = load_model("miewid", weights=repo)
    assert model.preprocessing.size == MIEWID_SIZE
    assert model.family == "timm_efficientnet"
    assert model.metadata["revision"] == snapshot.name
    assert not model.net.training
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    got = model.embed(x)
    assert got.shape == (2, MIEWID_DIM)
    torch.testing.assert_close(got.double(), src.embed(x), rtol=1e-4, atol=1e-4)


def test_file_load_and_default_cache_lookup(
    published: tuple[PublishedMiewId, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, blob, hub = published
    path = blob.parent.parent.parent / "miewid.safetensors"
    if not path.exists():
        path.symlink_to(blob)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    a = load_miewid(path).embed(x)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    b = load_model("miewid").embed(x)  # found in the (local) Hugging Face cache
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a.double(), src.embed(x), rtol=1e-4, atol=1e-4)


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        load_model("miewid")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("miewid", weights=tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelError, match="no MiewID weight file"):
        load_model("miewid", weights=tmp_path / "folder")
    wrong = tmp_path / "wrong.safetensors"
    save_file({"backbone.conv_stem.weight": torch.zeros(3), "pooling.p": torch.ones(1)}, str(wrong))
    with pytest.raises(ModelError, match=r"MiewID.*missing keys.*unexpected|MiewID.*shape"):
        load_model("miewid", weights=wrong)
