"""``--backend ray`` against a real local Ray (started once for the module): same files."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'pairx[ray]')")

from tests.batch.helpers import Interrupted, Interrupting  # noqa: E402

from pairx.batch.executors import LocalExecutor, RayExecutor  # noqa: E402
from pairx.batch.explain import ExplainTask, explain_batch, read_pairs_file  # noqa: E402
from pairx.batch.spec import ModelSpec, WorkerError  # noqa: E402
from pairx.core.errors import InputError  # noqa: E402
from pairx.data.datasets import load_dataset  # noqa: E402
from pairx.evaluation.protocol import EvaluationConfig, evaluate  # noqa: E402
from pairx.evaluation.report import write_report  # noqa: E402
from pairx.models.loaders import load_model  # noqa: E402

LAYER = "backbone.layer3"
FILES = ("pairs.csv", "metrics.csv", "faithfulness.csv", "table.md")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model("default")


def _evaluate(data: Path, out: Path, model, executor) -> None:  # type: ignore[no-untyped-def]
    config = EvaluationConfig(dataset=str(data), model="default", layers=(LAYER,), n_pairs=44,
                              homography="truth")
    try:
        evaluate(load_dataset(data), model, out, config, executor=executor, chunk_size=4,
                 progress=False, model_spec=ModelSpec.of(model, "default"))
    finally:
        executor.close()
    write_report(out, plots=False)


@pytest.fixture(scope="module")
def local_eval(batch_data: Path, model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "local"
    _evaluate(batch_data, out, model, LocalExecutor(model, threads=1))
    return out


def test_evaluate_ray_equals_local(batch_data: Path, model, local_eval: Path,
                                   tmp_path: Path) -> None:
    ex = RayExecutor(workers=2, worker_cpus=1)
    _evaluate(batch_data, tmp_path / "ray", model, ex)
    assert len((local_eval / "pairs.csv").read_text().splitlines()) == 45  # 44 pairs + header
    for name in FILES:
        assert (tmp_path / "ray" / name).read_bytes() == (local_eval / name).read_bytes(), name
    assert len({s.worker for s in ex.stats}) == 2  # both actors did work
    assert [s.index for s in ex.stats] != [] and sum(s.items for s in ex.stats) == 44


def test_interrupted_ray_run_resumed_equals_local(batch_data: Path, model, local_eval: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "cut"
    with pytest.raises(Interrupted):
        _evaluate(batch_data, out, model, Interrupting(RayExecutor(workers=2), 3))
    assert 1 < len((out / "pairs.csv").read_text().splitlines()) < 45
    _evaluate(batch_data, out, model, RayExecutor(workers=2))
    for name in FILES:
        assert (out / name).read_bytes() == (local_eval / name).read_bytes(), name


def test_explain_batch_ray_equals_local(pairs_csv: Path, batch_data: Path, model,
                                        tmp_path: Path) -> None:
    items = read_pairs_file(pairs_csv, load_dataset(batch_data))
    task = ExplainTask(ModelSpec.of(model, "default"), (LAYER,))
    explain_batch(items, task, tmp_path / "l", LocalExecutor(model, 1), chunk_size=4,
                  progress=False)
    with RayExecutor(workers=2) as ex:
        res = explain_batch(items, task, tmp_path / "r", ex, chunk_size=4, progress=False)
    assert res.n_computed == 26 and res.n_failed == 1
    assert (tmp_path / "r" / "results.jsonl").read_bytes() == (
        tmp_path / "l" / "results.jsonl").read_bytes()


def test_worker_with_other_weights_is_refused(pairs_csv: Path, batch_data: Path, model,
                                              tmp_path: Path) -> None:
    items = read_pairs_file(pairs_csv, load_dataset(batch_data))
    spec = ModelSpec.of(model, "default")
    wrong = ModelSpec(spec.spec, spec.weights, spec.preprocessing, spec.device,
                      "sha256:" + "0" * 64, spec.pairx_version)
    with RayExecutor(workers=1) as ex, pytest.raises(WorkerError, match="weights sha256:"):
        explain_batch(items, ExplainTask(wrong, (LAYER,)), tmp_path / "w", ex, progress=False)
    assert (tmp_path / "w" / "results.jsonl").read_text() == ""  # nothing written


def test_unpicklable_task_is_refused(model) -> None:
    import threading

    class Holder(ExplainTask):
        pass

    task = Holder(ModelSpec.of(model, "default"), (LAYER,))
    object.__setattr__(task, "lock", threading.Lock())
    with RayExecutor(workers=1) as ex, pytest.raises(InputError, match="cannot be sent"):
        list(ex.map(task, [[]]))


def test_unreachable_ray_address(pairs_csv: Path, batch_data: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pairx.cli.main", "explain-batch", str(pairs_csv), "--data",
         str(batch_data), "-o", str(tmp_path / "u"), "--backend", "ray", "--ray-address",
         "127.0.0.1:1", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no Ray cluster answers there" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("address", "message"), [("127.0.0.1:1", "no Ray cluster answers"),
                                                  ("headnode", "is not 'auto'"),
                                                  ("headnode:\u00b2", "is not 'auto'"),
                                                  ("headnode:70000", "is not 'auto'")])
def test_bad_ray_address_fails_at_construction(address: str, message: str) -> None:
    # Before any embedding or chunk work: the executor is built before the job starts.
    with pytest.raises(InputError, match=message):
        RayExecutor(address, workers=1)


def test_ray_workers_keep_the_drivers_pixel_limit(pairs_csv: Path, batch_data: Path, model,
                                                  tmp_path: Path) -> None:
    import json

    from pairx.core.images import set_max_pixels

    items = read_pairs_file(pairs_csv, load_dataset(batch_data))[:2]
    task = ExplainTask(ModelSpec.of(model, "default"), (LAYER,))
    set_max_pixels(100)  # below every image of the test data: each pair must fail, on the actor
    try:
        with RayExecutor(workers=1) as ex:
            res = explain_batch(items, task, tmp_path / "r", ex, chunk_size=2, progress=False)
    finally:
        set_max_pixels(None)
    recs = [json.loads(line) for line in (tmp_path / "r" / "results.jsonl").open()]
    assert res.n_failed == 2 and len(recs) == 2
    assert all(r["status"] == "failed" and "limit" in r["error"] for r in recs)
