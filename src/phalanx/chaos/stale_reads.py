"""Nodes that answer reads from their own state: broken on purpose, for fault runs.

Theory of operation
-------------------
A phalanx node orders reads through the log like any other command; that is what
makes them linearizable. `phalanx chaos --unsafe-local-reads` shows the checker
catching a cluster that does not: its nodes are `StaleReadNode`s, which answer a
read at once from their own service state, leader or not. A follower a few
milliseconds behind, or a node cut off by a partition while the majority goes on
writing, then answers with old values. Every other request goes the normal way.

Which commands are reads is the harness's knowledge, not the service's: `READ_OPS`
names the ops that leave the state alone for the service of every workload
(workloads.py). A node of any other service refuses to start rather than guess.

A node runs as `python -m phalanx.chaos.stale_reads` with the flags of `phalanx node`
(`ChaosCluster` passes `--config FILE`, see `cluster.stale_read_node_command`), under
the fixed hash seed every node runs with (server/determinism.py). Nothing outside
this package knows of it: the production node has no such read path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from phalanx.chaos.cluster import STALE_READS_MODULE
from phalanx.chaos.workloads import BANK_SERVICE, KV_SERVICE
from phalanx.core.errors import ConfigError
from phalanx.server.cli import add_node_arguments, run_node
from phalanx.server.config import NodeConfig
from phalanx.server.determinism import ensure_fixed_hash_seed
from phalanx.server.node import Node
from phalanx.transport.tcp import ClientRequestMessage, Connection
from phalanx.transport.wire import ClientReply, CommandRequest, ReplyStatus

#: The ops that do not change the state, by the `MODULE:CLASS` of each workload's
#: service: the only commands a `StaleReadNode` answers from its own state.
READ_OPS: dict[str, frozenset[str]] = {
    KV_SERVICE: frozenset({"get"}),
    BANK_SERVICE: frozenset({"balance", "balances", "total"}),
}


def is_read(read_ops: frozenset[str], command: Any) -> bool:
    """True for a command (`{"op": ..., ...}`) whose op is one of `read_ops`."""
    return isinstance(command, dict) and command.get("op") in read_ops


class StaleReadNode(Node):
    """A `Node` that answers reads from local state, bypassing the log: reads may be stale."""

    def __init__(self, config: NodeConfig) -> None:
        read_ops = READ_OPS.get(config.service)
        if read_ops is None:
            known = ", ".join(sorted(READ_OPS))
            raise ConfigError(
                "service", f"stale local reads know the reads of {known} only, not {config.service}"
            )
        super().__init__(config)
        self.read_ops = read_ops

    def _on_client_message(self, connection: Connection, message: ClientRequestMessage) -> None:
        # A replica found diverged must not serve anything, stale or not.
        if self.replica.diverged is None and self._answer_locally(connection, message):
            return
        super()._on_client_message(connection, message)

    def _answer_locally(self, connection: Connection, message: ClientRequestMessage) -> bool:
        if not isinstance(message, CommandRequest):
            return False
        try:
            command = msgspec.msgpack.decode(message.payload)
        except (msgspec.DecodeError, ValueError):
            return False  # the normal path answers a bad command
        if not is_read(self.read_ops, command):
            return False
        reply = msgspec.msgpack.encode(self.replica.service.apply(command))
        connection.send(ClientReply(message.request_id, ReplyStatus.OK, payload=reply))
        return True


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one `StaleReadNode` as `phalanx node` runs a `Node`; returns the exit code."""
    if argv is None:
        argv = sys.argv[1:]
        # As `phalanx node` does, and before anything is read or written.
        ensure_fixed_hash_seed(list(argv), module=STALE_READS_MODULE)
    parser = argparse.ArgumentParser(
        prog=f"python -m {STALE_READS_MODULE}",
        description="Runs one node that answers reads from its own state, bypassing the "
        "log: BROKEN ON PURPOSE, for `phalanx chaos --unsafe-local-reads`. The flags are "
        "those of `phalanx node`.",
    )
    add_node_arguments(parser)
    return run_node(parser.parse_args(argv), StaleReadNode)


if __name__ == "__main__":
    sys.exit(main())
