"""Fault tolerance on a two-node Ray cluster: an actor killed mid-run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'pairx[ray]')")

from ray.cluster_utils import Cluster  # noqa: E402

from pairx.batch.executors import LocalExecutor, RayExecutor  # noqa: E402
from pairx.batch.spec import ModelSpec  # noqa: E402
from pairx.data.datasets import load_dataset  # noqa: E402
from pairx.evaluation.protocol import EvaluationConfig, evaluate  # noqa: E402
from pairx.models.loaders import load_model  # noqa: E402

LAYER = "backbone.layer3"


class KillingExecutor(RayExecutor):
    """A Ray executor that kills one actor (Ray restarts it) while it computes a chunk."""

    killed: list[str]

    def map(self, task: Any, chunks: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        self.killed = []
        for i, out in enumerate(super().map(task, chunks)):
            if i == 2:
                # the actor that computed this chunk was handed the next one as its result
                # came back, so it is mid-chunk now (a chunk takes about a second)
                index = next(k for k, pid in self.pids.items() if pid == self.stats[-1].worker)
                self.killed.append(self.nodes[index])
                ray.kill(self.actors[index], no_restart=False)
            yield out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="warning")
    yield c
    ray.shutdown()
    c.shutdown()


def test_killed_actor_gives_identical_results_on_two_nodes(cluster: Cluster, batch_data: Path,
                                                           tmp_path: Path) -> None:
    model = load_model("default")
    config = EvaluationConfig(dataset=str(batch_data), model="default", layers=(LAYER,),
                              n_pairs=44, homography="truth")
    ds = load_dataset(batch_data)
    evaluate(ds, model, tmp_path / "local", config, executor=LocalExecutor(model, 1),
             chunk_size=4, progress=False)
    ex = KillingExecutor(workers=2, worker_cpus=1)
    try:
        evaluate(ds, model, tmp_path / "ray", config, executor=ex, chunk_size=4,
                 progress=False, model_spec=ModelSpec.of(model, "default"))
    finally:
        ex.close()
    assert ex.killed, "no actor was killed: the test did not test anything"
    assert len(set(ex.nodes.values())) == 2  # one actor per node
    assert len({s.node for s in ex.stats}) == 2  # work done on both nodes
    assert len({s.worker for s in ex.stats}) >= 3  # the killed actor came back as a new process
    assert sorted(s.index for s in ex.stats) == list(range(len(ex.stats)))  # each chunk once
    assert (tmp_path / "ray" / "pairs.csv").read_bytes() == (
        tmp_path / "local" / "pairs.csv").read_bytes()
