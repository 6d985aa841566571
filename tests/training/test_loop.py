"""Training loop smoke tests: loss decreases, checkpoints, exact resume, export round trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pairx.core.errors import DatasetError, InputError
from pairx.models.default import DEFAULT_LAYERS, load_exported
from pairx.training.data import AugmentConfig, augment
from pairx.training.loop import TrainConfig, train

NO_AUG = {
    "rotate": 0.0,
    "scale": [1.0, 1.0],
    "translate": 0.0,
    "shear": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "saturation": 0.0,
    "grayscale": 0.0,
    "erase_p": 0.0,
}


def small_config(data: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(
        data=str(data),
        backbone="resnet10t",
        timm_kwargs={"channels": [16, 32, 64, 128]},
        size=48,
        epochs=2,
        batch_p=4,
        batch_k=4,
        lr=3e-3,
        warmup_epochs=0.0,
        evaluate=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_dataset: Path, tmp_path: Path) -> None:
    config = small_config(tiny_dataset, epochs=6, augment=NO_AUG)
    result = train(config, tmp_path / "run", progress=False)
    assert len(result.history) == 6
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["loss"] < 0.95 * result.history[0]["loss"]
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and result.model_path.is_file()


def test_checkpoint_and_exact_resume(tiny_dataset: Path, tmp_path: Path) -> None:
    config = small_config(tiny_dataset, epochs=2)
    full = train(config, tmp_path / "full", progress=False)
    # the same run interrupted after epoch 1, then resumed
    part = train(config, tmp_path / "split", progress=False, stop_after=1)
    assert len(part.history) == 1 and not part.model_path.exists()
    ckpt = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1
    assert set(ckpt) >= {"model", "head", "optimizer", "scheduler", "generator", "torch_rng"}
    with pytest.raises(InputError, match="exists"):
        train(config, tmp_path / "split", progress=False)
    with pytest.raises(InputError, match="differ"):
        train(replace(config, lr=1e-4), tmp_path / "split", resume=True, progress=False)
    resumed = train(config, tmp_path / "split", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0]
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1.0, 2.0]
    assert resumed.history[1]["loss"] == pytest.approx(full.history[1]["loss"], rel=1e-4)
    a = load_exported(full.model_path).net.state_dict()
    b = load_exported(resumed.model_path).net.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=f"resume diverged at {key}")


def test_export_round_trip(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(
        small_config(tiny_dataset, epochs=1, evaluate=True), tmp_path / "r", progress=False
    )
    cfg = json.loads(result.model_path.with_suffix(".json").read_text())
    assert cfg["backbone"] == "resnet10t" and cfg["size"] == [48, 48]
    assert cfg["layers"] == list(DEFAULT_LAYERS)
    assert set(result.retrieval) >= {"all"} and cfg["test_retrieval"]["all"]["n_queries"] > 0
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    model = load_exported(result.model_path)
    keys = model.net.state_dict().keys()  # the ArcFace head is not part of the export
    assert all(k.split(".")[0] in ("backbone", "global_pool", "bn") for k in keys)
    for key, value in model.net.state_dict().items():  # float16 storage, float32 model
        assert value.dtype == ckpt["model"][key].dtype
        torch.testing.assert_close(value, ckpt["model"][key].to(torch.float16).to(value.dtype))


def test_bad_training_input(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        train(small_config(tmp_path / "missing"), tmp_path / "x", progress=False)
    with pytest.raises(DatasetError, match="batch-p"):
        train(small_config(tiny_dataset, batch_p=50), tmp_path / "y", progress=False)
    with pytest.raises(InputError):
        train(small_config(tiny_dataset, epochs=0), tmp_path / "z", progress=False)
    with pytest.raises(InputError, match="resume"):
        train(small_config(tiny_dataset), tmp_path / "none", resume=True, progress=False)


def test_augment_identity_and_ranges() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 40), dtype=torch.uint8)
    plain = augment(
        images,
        AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in NO_AUG.items()}),
        gen,
    )  # type: ignore[arg-type]
    torch.testing.assert_close(plain, images.float() / 255.0, atol=1e-5, rtol=0)
    strong = augment(images, AugmentConfig(erase_p=1.0), gen)
    assert strong.shape == (3, 3, 32, 40) and strong.min() >= 0 and strong.max() <= 1
    again = augment(images, AugmentConfig(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(
        again, augment(images, AugmentConfig(), torch.Generator().manual_seed(5))
    )


def test_init_from_checkpoint_keeps_the_head_at_another_size(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    first = train(small_config(tiny_dataset, epochs=1), tmp_path / "a", progress=False)
    ckpt_path = tmp_path / "a" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    # continue at a larger input size: network and ArcFace head start where the run ended
    second = train(small_config(tiny_dataset, epochs=1, size=64, init=str(ckpt_path), lr=1e-12,
                                warmup_epochs=0.0), tmp_path / "b", progress=False)
    after = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for key, value in ckpt["head"].items():  # tiny lr: the head is the loaded one
        torch.testing.assert_close(after["head"][key], value)
    cfg = json.loads(second.model_path.with_suffix(".json").read_text())
    assert cfg["size"] == [64, 64] and first.model_path.is_file()
    # a plain export starts a fresh head; a file that is not a checkpoint is refused
    fresh = train(small_config(tiny_dataset, epochs=1, init=str(first.model_path), lr=1e-12),
                  tmp_path / "c", progress=False)
    assert fresh.model_path.is_file()
    fresh_head = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["head"]
    assert any(not torch.equal(fresh_head[k], ckpt["head"][k]) for k in fresh_head)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(InputError, match="not a pairx training checkpoint"):
        train(small_config(tiny_dataset, init=str(bogus)), tmp_path / "d", progress=False)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("{}")
    with pytest.raises(InputError, match="not a pairx training checkpoint"):
        train(small_config(tiny_dataset, init=str(garbage)), tmp_path / "e", progress=False)


def test_device_is_checked_before_training(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown device"):
        train(small_config(tiny_dataset), tmp_path / "a", progress=False, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            train(small_config(tiny_dataset), tmp_path / "b", progress=False, device="cuda")


def test_old_checkpoints_resume_with_new_options_at_their_defaults(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    config = small_config(tiny_dataset, epochs=2)
    train(config, tmp_path / "run", progress=False, stop_after=1)
    ckpt_path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ("dense_weight", "dense_layer", "dense_temperature"):  # written before they existed
        del ckpt["train_config"][key]
    # recommended PAIR-X layers only annotate the export (their default order changed once)
    ckpt["train_config"]["layers"] = list(reversed(DEFAULT_LAYERS))
    torch.save(ckpt, ckpt_path)
    resumed = train(config, tmp_path / "run", progress=False, resume=True)
    assert len(resumed.history) == 2
    exported = json.loads(resumed.model_path.with_suffix(".json").read_text())
    assert exported["layers"] == list(DEFAULT_LAYERS)
    with pytest.raises(InputError, match="dense_weight"):
        train(replace(config, dense_weight=1.0), tmp_path / "run", progress=False, resume=True)


def test_imprinted_head_starts_with_a_lower_arcface_loss(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    first = train(small_config(tiny_dataset, epochs=8, augment=NO_AUG), tmp_path / "a",
                  progress=False)
    losses = {}
    for head_init in ("random", "imprint"):
        # another seed: the same one would recreate the initial head the network was trained to
        cfg = small_config(tiny_dataset, epochs=1, init=str(first.model_path), lr=1e-12,
                           augment=NO_AUG, head_init=head_init, seed=5)
        losses[head_init] = train(cfg, tmp_path / head_init, progress=False).history[0]["arcface"]
    assert losses["imprint"] < 0.9 * losses["random"]
    with pytest.raises(InputError, match="head-init"):
        train(small_config(tiny_dataset, head_init="mean"), tmp_path / "bad", progress=False)


def test_more_individuals_from_a_merged_dataset(tiny_dataset: Path, tmp_path: Path) -> None:
    """The stage-10 recipe in small: a checkpoint continues on a merged set with a new head."""
    from pairx.data.merge import merge_datasets

    from .conftest import make_pattern_dataset

    first = train(small_config(tiny_dataset, epochs=1), tmp_path / "a", progress=False)
    # another set whose identities are named like the first one's (id000, id001, ...)
    other = make_pattern_dataset(tmp_path / "other", identities=8, seed=1)
    merged = merge_datasets([tiny_dataset, other], tmp_path / "merged", names=["s1", "s2"])
    n_train = len({s.identity for s in merged if s.split == "train"})
    assert n_train == 9 + 6  # a plain concatenation would see 9 identities
    ckpt = str(tmp_path / "a" / "checkpoint.pt")
    with pytest.warns(UserWarning, match="another set of identities"):
        train(small_config(tmp_path / "merged", epochs=1, init=ckpt, head_init="imprint"),
              tmp_path / "b", progress=False)
    head = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["head"]
    first_head = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["head"]
    rows = {k: v.shape[0] for k, v in head.items() if v.dim() == 2}
    first_rows = {k: v.shape[0] for k, v in first_head.items() if v.dim() == 2}
    assert rows and all(rows[k] * 9 == first_rows[k] * n_train for k in rows)
    assert first.model_path.is_file()
