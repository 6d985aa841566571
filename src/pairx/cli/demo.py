"""``pairx demo``: the main job, end to end, offline, in about a minute on 2 CPU cores.

It generates a few synthetic sightings, shows what the default model sees (a retrieval sheet),
explains a true match and a hard non-match with PAIR-X, writes PNG + JSON, and prints the
similarity and how many of the top matches land on their true correspondence (known exactly on
the synthetic benchmark).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pairx.cli.common import check_output_folder

DEMO_SEED = 20261121
"""Seed of the demo sightings (never used to train the default model)."""


def _retrieval_sheet(images: list[np.ndarray], labels: list[str], sims: np.ndarray,
                     identities: list[str], n_show: int = 4, thumb: int = 96) -> np.ndarray:
    """One row per query: the query, then its ``n_show`` most similar other sightings.

    Green frames mark the same individual, red frames a different one; the cosine similarity
    is written under each candidate.

    Returns
    -------
    np.ndarray
        ``(rows * (thumb + 16), (n_show + 1) * thumb, 3)`` uint8 RGB.
    """
    from PIL import Image, ImageDraw

    n = len(images)
    cell_h = thumb + 16
    sheet = Image.new("RGB", ((n_show + 1) * (thumb + 4), n * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for q in range(n):
        order = [int(i) for i in np.argsort(-sims[q]) if i != q][:n_show]
        row = [q, *order]
        for col, idx in enumerate(row):
            x0, y0 = col * (thumb + 4), q * cell_h
            sheet.paste(Image.fromarray(images[idx]).resize((thumb, thumb)), (x0, y0))
            if col == 0:
                draw.text((x0 + 2, y0 + thumb + 2), labels[q][:16], fill=(0, 0, 0))
                continue
            same = identities[idx] == identities[q]
            colour = (0, 160, 0) if same else (200, 0, 0)
            draw.rectangle([x0, y0, x0 + thumb - 1, y0 + thumb - 1], outline=colour, width=3)
            draw.text((x0 + 2, y0 + thumb + 2), f"{sims[q, idx]:.3f}", fill=colour)
    return np.asarray(sheet)


def run_demo(out_dir: Path, *, individuals: int = 3, sightings: int = 3,
             n_matches: int = 20, n_pixel_maps: int = 10) -> dict[str, object]:
    """Run the demo and write its outputs to ``out_dir``; returns the printed summary."""
    import torch

    from pairx.data.synthetic import generate
    from pairx.explainers.pairx import PairX
    from pairx.metrics.faithfulness import pair_faithfulness
    from pairx.metrics.homography import GroundTruthHomography
    from pairx.models.default import DEFAULT_LAYERS, load_default
    from pairx.viz.figure import save_png

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = out_dir / "sightings"
    dataset = generate(
        data_dir, seed=DEMO_SEED, individuals=individuals, sightings=sightings,
        species=("zebra", "giraffe", "leopard"), progress=False, overwrite=True,
    )
    model = load_default()
    layer = DEFAULT_LAYERS[0]  # layer3: chosen by the protocol's layer selection (rho_res)
    engine = PairX(model, [layer], n_matches=n_matches, n_pixel_maps=n_pixel_maps)
    samples = list(dataset)
    paths = [str(s.path) for s in samples]
    emb = torch.nn.functional.normalize(engine.embed(paths), dim=1)
    sims = (emb @ emb.T).cpu().numpy()
    ids = [s.identity for s in samples]
    shown = [model.preprocessing.resize(p) for p in paths]
    save_png(_retrieval_sheet(shown, [s.image_id for s in samples], sims, ids),
             out_dir / "retrieval.png")

    # A true match: the same individual seen from the same side (so correspondences exist).
    true_pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))
                  if ids[i] == ids[j] and samples[i].orientation == samples[j].orientation]
    # A hard non-match: the most similar pair of two different individuals of one species.
    false_pairs = [(i, j) for i in range(len(samples)) for j in range(i + 1, len(samples))
                   if ids[i] != ids[j] and samples[i].species == samples[j].species]
    if not true_pairs or not false_pairs:
        raise RuntimeError("the demo dataset has no usable pair; raise --individuals")
    ti, tj = max(true_pairs, key=lambda p: sims[p])
    fi, fj = max(false_pairs, key=lambda p: sims[p])

    truth = GroundTruthHomography(dataset)
    summary: dict[str, object] = {"layer": layer, "model": model.name}
    for tag, (i, j) in (("true_match", (ti, tj)), ("hard_non_match", (fi, fj))):
        expl = engine.explain_layers(paths[i], paths[j])[layer]
        save_png(expl.render(), out_dir / f"{tag}.png")
        expl.save(out_dir / f"{tag}.json")
        entry: dict[str, object] = {
            "image_a": samples[i].image_id,
            "image_b": samples[j].image_id,
            "same_individual": ids[i] == ids[j],
            "similarity": round(expl.similarity, 4),
            "similarity_meaning": expl.context.describe() if expl.context else None,
            "n_cross_checked_matches": len(expl.matches.relevance),
        }
        if ids[i] == ids[j]:
            faith = pair_faithfulness(
                truth, samples[i].image_id, samples[j].image_id, expl, n_top=n_matches,
                rng=np.random.default_rng(DEMO_SEED),
            )
            hits = round(faith.faithful * faith.n_top)
            entry["top_matches_on_true_correspondence"] = f"{hits}/{faith.n_top}"
            entry["random_matches_on_true_correspondence"] = round(faith.random, 3)
        summary[tag] = entry
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def register(app: typer.Typer) -> None:
    """Add ``pairx demo`` to the app."""

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")] = Path("demo_out"),
        individuals: Annotated[int, typer.Option(help="Individuals per species.",
                                                 min=1, max=1000)] = 3,
        sightings: Annotated[int, typer.Option(help="Sightings per individual.",
                                               min=2, max=1000)] = 3,
    ) -> None:
        """Generate sightings and explain a true match and a hard non-match (offline)."""
        check_output_folder(out, "--out")
        summary = run_demo(out, individuals=individuals, sightings=sightings)
        typer.echo(json.dumps(summary, indent=2))
        typer.echo(f"wrote {out}/retrieval.png, true_match.png/.json/.npz, "
               "hard_non_match.png/.json/.npz")
