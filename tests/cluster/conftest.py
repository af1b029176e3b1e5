"""Fixtures for the multi-process tests: every process started is killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import LiveCluster


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LiveCluster]]:
    """Builds clusters (not started) under tmp_path; kills all their processes at the end."""
    clusters: list[LiveCluster] = []

    def make(size: int = 3, **options: object) -> LiveCluster:
        root = tmp_path / f"cluster-{len(clusters) + 1}"
        root.mkdir()
        cluster = LiveCluster(root, size, **options)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture
def cluster(make_cluster: Callable[..., LiveCluster]) -> LiveCluster:
    """A running 3-node key-value cluster that has elected a leader."""
    live = make_cluster(3)
    live.start_all()
    live.wait_for_leader()
    return live
