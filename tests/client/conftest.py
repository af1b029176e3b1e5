"""The live-cluster fixtures of tests/cluster, shared with the client's live tests."""

from cluster.conftest import cluster, make_cluster

__all__ = ["cluster", "make_cluster"]
