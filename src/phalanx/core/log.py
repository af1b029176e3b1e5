"""The in-memory view of one node's Raft log.

Theory of operation
-------------------
Entries live in a Python list; `entries[i]` has index `offset + 1 + i`, where
`offset` is the last index compacted away (0 before any compaction); `offset_term` is
that entry's term, kept for the consistency check of the entry after it. Three cursors
split the log, and always satisfy `applied <= committed` and `stable <= last`:

    offset   applied      committed       stable            last
      |-- applied --|-- to apply --|          |-- unstable --|

* `stable`: entries up to here are durable. Entries after it are handed to the
  caller in a `Ready` to persist, and `stable_to` moves the cursor once they are.
  A truncation (a follower overwriting a conflicting suffix, §5.3) pulls `stable`
  back, so the overwritten range is written again.
* `committed`: known committed (§5.3/§5.4); never decreases while the node runs.
* `applied`: handed to the service for applying.

The log never truncates at or below `committed`: that would undo a committed entry,
which Raft's safety argument (§5.4.3) rules out, so it is an assertion, not an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from phalanx.core.types import Entry, Index, SnapshotMeta, Term, entry_size_bytes


class RaftLog:
    __slots__ = ("applied", "committed", "entries", "offset", "offset_term", "stable")

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        *,
        committed: Index = Index(0),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        snapshot = snapshot or SnapshotMeta()
        offset = snapshot.index
        self.offset = snapshot.index
        self.offset_term = snapshot.term
        committed = Index(max(committed, offset))
        self.entries: list[Entry] = list(entries)
        for position, entry in enumerate(self.entries):
            assert entry.index == offset + 1 + position, "restored log is not contiguous"
        self.stable = self.last_index()
        assert offset <= committed <= self.last_index(), "commit beyond restored log"
        self.committed = committed
        self.applied = offset

    # -- reading -----------------------------------------------------------------

    def last_index(self) -> Index:
        return Index(self.offset + len(self.entries))

    def last_term(self) -> Term:
        if self.entries:
            return self.entries[-1].term
        return self.offset_term

    def term(self, index: int) -> Term | None:
        """The term of the entry at `index`, or None when it is not in the log."""
        if index == self.offset:
            return self.offset_term
        position = index - self.offset - 1
        if 0 <= position < len(self.entries):
            return self.entries[position].term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        position = index - self.offset - 1
        assert 0 <= position < len(self.entries), f"entry {index} not in log"
        return self.entries[position]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def slice(self, low: int, high: int, max_bytes: int) -> list[Entry]:
        """Entries with index in [low, high), at least one, at most `max_bytes` beyond."""
        assert self.offset < low <= high <= self.last_index() + 1
        start = low - self.offset - 1
        stop = high - self.offset - 1
        if stop - start <= 1:
            return self.entries[start:stop]
        total = 0
        end = start
        while end < stop:
            total += entry_size_bytes(self.entries[end])
            if total > max_bytes and end > start:
                break
            end += 1
        return self.entries[start:end]

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.offset :]

    def has_unstable(self) -> bool:
        return self.stable < self.last_index()

    def committed_to_apply_end(self) -> Index:
        return Index(min(self.committed, self.last_index()))

    def has_committed_to_apply(self) -> bool:
        return self.applied < self.committed_to_apply_end()

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        low = self.applied + 1
        high = self.committed_to_apply_end() + 1
        if low >= high:
            return []
        return self.slice(low, high, max_bytes)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[Index, Term]:
        """The largest index <= `index` whose term is <= `term`, and that term.

        Used on both sides of fast backtracking: entries after the returned index
        cannot match a log whose entry at `index` has term `term` (Log Matching)."""
        index = min(index, self.last_index())
        while index > self.offset:
            entry_term = self.entries[index - self.offset - 1].term
            if entry_term <= term:
                return Index(index), entry_term
            index -= 1
        return Index(self.offset), self.offset_term

    # -- changing ------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Appends `entries`, first truncating everything from `entries[0].index` on."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, (
            f"truncating at {first} would undo committed entries (commit={self.committed})"
        )
        assert first <= self.last_index() + 1, "gap in log"
        position = first - self.offset - 1
        if position < len(self.entries):
            del self.entries[position:]
            self.stable = Index(min(self.stable, first - 1))
        self.entries.extend(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: Sequence[Entry]
    ) -> Index | None:
        """The follower side of AppendEntries (§5.3 receiver rules 2-5).

        Returns the index of the last entry the leader sent (now matched), or None
        when our log has no entry `prev_index` with term `prev_term`."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = Index(prev_index + len(entries))
        conflict = self._find_conflict(entries)
        if conflict:
            self.append(entries[conflict - prev_index - 1 :])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or differs in term from ours; 0 if none."""
        for entry in entries:
            if self.term(entry.index) != entry.term:
                return entry.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), (
                f"commit {index} beyond last index {self.last_index()}: log lost or corrupt"
            )
            self.committed = Index(index)

    def stable_to(self, index: int, term: int) -> None:
        """Marks entries up to `index` durable, unless that entry was since replaced."""
        if index > self.stable and self.term(index) == term:
            self.stable = Index(index)

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replaces the whole log by a snapshot from the leader (§7)."""
        assert snapshot.index > self.committed, "restoring a snapshot behind our commit"
        self.entries = []
        self.offset = snapshot.index
        self.offset_term = snapshot.term
        self.committed = snapshot.index
        self.applied = snapshot.index
        self.stable = snapshot.index

    def compact_to(self, index: int) -> None:
        """Drops entries up to `index`, which must be applied and durable (§7)."""
        if index <= self.offset:
            return
        assert index <= self.applied and index <= self.stable, "compacting unapplied entries"
        term = self.term(index)
        assert term is not None
        del self.entries[: index - self.offset]
        self.offset = Index(index)
        self.offset_term = term

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, "applied beyond commit"
        self.applied = Index(index)
