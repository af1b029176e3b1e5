"""Named maximums for everything in `phalanx.check` that grows with its input.

A history or a search that would exceed one of these is refused (input limits raise
`CheckError`) or ends with the verdict "unknown" (search limits): never a wrong answer
and never an unbounded use of memory.
"""

from __future__ import annotations

from typing import Final

# Input.
history_bytes_max: Final = 256 * 1024 * 1024
history_line_bytes_max: Final = 64 * 1024
history_operations_max: Final = 2_000_000
edn_nesting_depth_max: Final = 64

# Search. The cache holds one entry per distinct (linearized set, model state) pair
# the search has visited. An entry costs about `search_cache_entry_bytes` plus one
# bit per operation of its partition (the bitset); the search stops when the
# estimate passes `search_cache_bytes_max`.
search_cache_bytes_max: Final = 1024 * 1024 * 1024
search_cache_entry_bytes: Final = 150
search_steps_max: Final = 500_000_000
search_budget_seconds_default: Final = 300.0
# How often (in search steps) the wall clock is read: often enough to stop within a
# few milliseconds of the budget, rarely enough to cost nothing measurable.
search_clock_interval_steps: Final = 4096

# Report.
excerpt_operations_max: Final = 24
excerpt_preceding_operations: Final = 3
reported_states_max: Final = 8
