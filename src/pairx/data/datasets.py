"""Re-ID datasets: WildlifeDatasets-style metadata, a folder per identity, or our synthetic set.

A dataset is a list of :class:`Sample` records. Two on-disk layouts are recognised:

* ``DIR/metadata.csv`` with columns ``image_id, identity, path`` (``path`` relative to ``DIR`` or
  absolute) and optional ``split`` (``train``/``test``), ``bbox`` (``[x, y, w, h]``), ``species``,
  ``orientation``. This is the WildlifeDatasets format and what ``pairx synth`` writes.
* ``DIR/<identity>/<image files>``: one sub-folder per identity, no split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pairx.core.errors import DatasetError
from pairx.core.files import user_path
from pairx.core.tables import read_csv_rows

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
REQUIRED_COLUMNS = ("image_id", "identity", "path")


@dataclass(frozen=True)
class Sample:
    """One image of one individual.

    Attributes
    ----------
    image_id
        Unique id within the dataset.
    identity
        Individual id (a string, whatever the file stores).
    path
        Absolute path of the image file.
    split
        ``"train"``, ``"test"`` or ``""`` when the dataset has no split.
    species, orientation
        Optional annotations (``""`` when absent).
    bbox
        Optional ``(x, y, w, h)`` crop in pixels.
    """

    image_id: str
    identity: str
    path: Path
    split: str = ""
    species: str = ""
    orientation: str = ""
    bbox: tuple[float, float, float, float] | None = None


@dataclass
class ReIDDataset:
    """A list of samples with helpers for splits and identities."""

    root: Path
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def identities(self) -> list[str]:
        """Sorted unique identities."""
        return sorted({s.identity for s in self.samples})

    @property
    def species(self) -> list[str]:
        """Sorted unique species names (``[""]`` when unannotated)."""
        return sorted({s.species for s in self.samples})

    def by_id(self, image_id: str) -> Sample:
        """Sample with the given ``image_id``; raises :class:`DatasetError` if unknown."""
        index = self._index()
        if image_id not in index:
            raise DatasetError(f"unknown image_id {image_id!r} in dataset {self.root}")
        return self.samples[index[image_id]]

    def _index(self) -> dict[str, int]:
        cached: dict[str, int] | None = getattr(self, "_index_cache", None)
        if cached is None or len(cached) != len(self.samples):
            cached = {s.image_id: i for i, s in enumerate(self.samples)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    def subset(
        self, *, split: str | None = None, species: Sequence[str] | None = None
    ) -> ReIDDataset:
        """Samples of one split and/or a set of species."""
        out = [
            s
            for s in self.samples
            if (split is None or s.split == split) and (species is None or s.species in species)
        ]
        return ReIDDataset(self.root, out)


def _parse_bbox(text: str, where: str) -> tuple[float, float, float, float] | None:
    text = text.strip()
    if not text:
        return None
    try:
        values = json.loads(text)
        if len(values) != 4:
            raise ValueError
        x, y, w, h = (float(v) for v in values)
        return (x, y, w, h)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{where}: bbox must be '[x, y, w, h]', got {text!r}") from exc


def _read_metadata(root: Path, csv_path: Path) -> list[Sample]:
    _, rows = read_csv_rows(
        csv_path, required=REQUIRED_COLUMNS, what="metadata file",
        hint="the WildlifeDatasets format")
    samples: list[Sample] = []
    seen: set[str] = set()
    for entry in rows:
        row = entry.values
        where = f"{csv_path}:{entry.line}"
        image_id, identity = row.get("image_id", ""), row.get("identity", "")
        rel = row.get("path", "")
        if not image_id or not identity or not rel:
            raise DatasetError(f"{where}: empty image_id, identity or path")
        if image_id in seen:
            raise DatasetError(f"{where}: duplicate image_id {image_id!r}")
        seen.add(image_id)
        path = Path(rel) if Path(rel).is_absolute() else root / rel
        split = row.get("split", "")
        if split not in ("", "train", "test", "val"):
            raise DatasetError(f"{where}: split must be train, test or val; got {split!r}")
        samples.append(
            Sample(
                image_id=image_id,
                identity=identity,
                path=path,
                split=split,
                species=row.get("species", ""),
                orientation=row.get("orientation", ""),
                bbox=_parse_bbox(row.get("bbox", ""), where),
            )
        )
    return samples


def _read_folders(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    for ident_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for img in sorted(ident_dir.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(
                    Sample(
                        image_id=f"{ident_dir.name}/{img.name}",
                        identity=ident_dir.name,
                        path=img.resolve(),
                    )
                )
    return samples


def load_dataset(path: str | Path, *, check_files: bool = True) -> ReIDDataset:
    """Load a dataset from a folder (or a ``metadata.csv`` file).

    Parameters
    ----------
    path
        Dataset folder containing ``metadata.csv``, the CSV file itself, or a folder with one
        sub-folder per identity.
    check_files
        Verify that every image file exists (cheap ``stat`` calls).

    Returns
    -------
    ReIDDataset

    Raises
    ------
    DatasetError
        Missing folder, malformed metadata, no images, or missing image files.
    """
    p = user_path(path)
    if not p.exists():
        raise DatasetError(f"dataset not found: {p}")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DatasetError(f"expected a dataset folder or a metadata .csv file, got {p}")
        root, samples = p.parent.resolve(), _read_metadata(p.parent.resolve(), p)
    elif (p / "metadata.csv").is_file():
        root = p.resolve()
        samples = _read_metadata(root, root / "metadata.csv")
    else:
        root = p.resolve()
        samples = _read_folders(root)
        if not samples:
            raise DatasetError(
                f"{p} has no metadata.csv and no identity sub-folders with images; "
                "generate one with 'pairx synth -o DIR' or provide WildlifeDatasets metadata"
            )
    if not samples:
        raise DatasetError(f"dataset {p} is empty")
    if check_files:
        missing = [s.path for s in samples if not s.path.is_file()]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise DatasetError(
                f"{len(missing)} image file(s) listed in {p} do not exist, e.g. "
                + ", ".join(str(m) for m in missing[:3])
                + more
            )
    return ReIDDataset(root, samples)
