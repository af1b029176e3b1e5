"""Asking several members for their status at once (status tables, demos, harnesses)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from phalanx.client.client import AsyncClient
from phalanx.client.errors import ClientError


async def gather_statuses(
    addresses: Sequence[str], *, cluster_id: str = "phalanx", attempt_timeout: float = 1.0
) -> list[dict[str, Any] | None]:
    """Each member's status, in order; None for a member that did not answer."""

    async def one(address: str) -> dict[str, Any] | None:
        client = AsyncClient([address], cluster_id=cluster_id, attempt_timeout=attempt_timeout)
        try:
            return await client.status()
        except (ClientError, OSError, TimeoutError):
            return None
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(address) for address in addresses)))
