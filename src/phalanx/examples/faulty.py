"""A deliberately broken bank, for showing that the cluster finds it.

`FaultyBank` behaves exactly like `Bank` except that, with a small seeded probability,
it answers a transfer as if it had applied it but leaves the balances alone: the
"sometimes skips a transition" fault of the first lesson. Run it on one node of a
cluster and the others on `Bank`; the replicas' state digests part at the next
checkpoint, and the majority names the faulty node. Never use it for anything else.
"""

from __future__ import annotations

import random
from typing import Any

from phalanx.examples.bank import Bank

#: Chance that a transfer is silently skipped.
SKIP_PROBABILITY = 0.002
#: The planted fault stays repeatable: the same seed skips the same transfers.
SKIP_SEED = 7


class FaultyBank(Bank):
    def __init__(self) -> None:
        super().__init__()
        self._fault_rng = random.Random(SKIP_SEED)
        self.skipped = 0

    def apply(self, command: Any) -> dict[str, Any]:
        is_transfer = isinstance(command, dict) and command.get("op") == "transfer"
        if is_transfer and self._fault_rng.random() < SKIP_PROBABILITY:
            before = self.state()
            reply = super().apply(command)
            if reply.get("ok"):
                self.restore(before)  # the skipped transition
                self.skipped += 1
            return reply
        return super().apply(command)
