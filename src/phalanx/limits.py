"""Every hard limit of a node, in one place.

The rule (STYLE.md, TigerBeetle's "a limit on everything"): every queue, batch,
window, frame, session table and snapshot chunk has a named maximum, either here or
in the validated configuration (`server/config.py`, `docs/configuration.md`). Those
an operator may tune are settings; those here are not, because they guard the node
against its peers, its clients, its disk or its own service code, and a wrong value
would be a hole rather than a preference.

Each constant says what it bounds and why it has its value. `docs/limits.md` lists
them all (a test checks it). The modules that use a limit import it from here and keep
it importable under the old name, so that a test may still patch `tcp.X` for the one
module it exercises.

Not here: the limits of the tools (`sim`, `chaos`, `bench`, `check`, `demo`), which bound
their own bookkeeping, and of the example services, which are the services' own rules.
The core (`phalanx.core`) imports nothing outside itself, so its bounds are all
`RaftConfig` settings, set from the `[raft]` table.

Units come last in a name (`_BYTES`, `_S`); `_MAX` marks a bound, `_HIGH`/`_LOW` a pair
of water marks.
"""

from __future__ import annotations

# -- cluster --------------------------------------------------------------------------

#: Members of one cluster. Every Raft message fans out to all of them and a commit waits
#: for a majority: nine tolerate four failures, and beyond that each write costs more
#: than the extra safety buys (etcd recommends at most seven).
MAX_MEMBERS = 9

# -- transport: connections, frames, replies (docs/limits.md tells what a peer sees) --

#: The first wait before a peer link reconnects: soon enough that a restarted peer is
#: back within a couple of ticks, long enough not to spin on a refused connection.
RECONNECT_DELAY_MIN_S = 0.02
#: ... doubling to at most this: a peer that comes back is found within a second, and
#: a dead one costs one connection attempt per second.
RECONNECT_DELAY_MAX_S = 1.0
#: Bytes queued in the kernel-side write buffer before a peer link drops messages
#: (Raft retransmits) instead of growing memory without bound.
PEER_WRITE_BUFFER_HIGH_BYTES = 8 * 1024 * 1024
#: A connection must say Hello within this long, or it is closed: a real peer or client
#: sends it at once, so only a stranger holding a connection slot takes longer.
HANDSHAKE_TIMEOUT_S = 5.0
#: Inbound connections (peers, clients and ones still to say Hello) a node accepts at
#: once; beyond it new connections are closed on arrival. The node also keeps it below
#: its open-file limit.
MAX_INBOUND_CONNECTIONS = 4096
#: Largest frame accepted before the Hello: a Hello is about 150 bytes (cluster ids
#: are at most 128 characters), and a stranger must not make the node buffer megabytes.
HELLO_FRAME_BYTES_MAX = 4096
#: Bytes of unfinished frames all inbound connections of a node may hold together.
#: Peers send frames of up to `max_frame_bytes` (about 2 MiB by default) and clients
#: commands of up to 1 MiB, each arriving in well under a second; 64 MiB holds every
#: peer's largest frame and dozens of clients' at once, while 4096 connections each
#: holding a 2 MiB frame would be 8 GiB. Raised to fit every peer's largest frame
#: when `max_frame_bytes` is configured larger.
PARTIAL_FRAME_BYTES_TOTAL_MAX = 64 * 1024 * 1024
#: Over the budget, connections are closed until their unfinished frames add up to
#: this fraction of it, so one overflow frees room for many reads, not just the next.
PARTIAL_FRAME_SHED_TO_FRACTION = 0.75
#: A frame that started arriving must be whole within this long, or the connection is
#: closed: a peer's 2 MiB frame takes milliseconds, so only a stalled or trickling
#: sender (holding memory and a connection slot) is ever this slow.
FRAME_STALL_TIMEOUT_S = 10.0
#: Sessions one client connection may open within `SESSION_OPENS_WINDOW_S`. A client
#: opens one session and another only when that one expired (after the session
#: timeout, 60 s by default), so a connection asking for many is opening sessions for
#: their own sake, each one a log entry and a slot in the replicated session table.
SESSIONS_PER_CONNECTION_MAX = 64
#: ... the window those opens are counted in: the default session timeout, so an
#: honest client never opens more than one in it.
SESSION_OPENS_WINDOW_S = 60.0
#: Unsent reply bytes above which the node stops reading a client connection. Most
#: replies are a few hundred bytes and the largest about `max_message_bytes` (1 MiB by
#: default). A client that keeps reading seldom leaves any in the process (the kernel's
#: socket buffers hold what it has yet to take), and if it does, the pause only makes it
#: wait; one that does not read is held to about this much plus the requests of one
#: read (at most 256 KiB).
CLIENT_REPLY_BYTES_HIGH = 1024 * 1024
#: ... and below which (the client has read the rest) it reads the connection again:
#: low enough that a slow reader is resumed in large steps, not once per reply.
CLIENT_REPLY_BYTES_LOW = 256 * 1024
#: Unsent reply bytes at which a client connection is closed. Reading is paused long
#: before, but replies to requests already taken still come (a command's reply once it
#: commits, a subscriber's pushed messages); 32 of the largest fit, and a connection
#: that lets that many pile up is not reading them.
CLIENT_REPLY_BYTES_MAX = 32 * 1024 * 1024
#: A client connection whose reading stays paused this long is closed: it has not read
#: the 768 KiB between the two marks, when a link of 1 Mbit/s carries 3.5 MiB in that
#: time, and it holds up to `CLIENT_REPLY_BYTES_MAX` and a connection slot meanwhile.
CLIENT_READ_PAUSE_TIMEOUT_S = 30.0
#: Unsent reply bytes all client connections of a node may hold together; beyond it
#: the connections holding the most are closed. 4096 connections (the most a node
#: accepts) each paused at the high-water mark would hold 4 GiB; 256 MiB is a couple of
#: hundred of those, or 8 at `CLIENT_REPLY_BYTES_MAX`.
CLIENT_REPLY_BYTES_TOTAL_MAX = 256 * 1024 * 1024

# -- the node: file descriptors, client ingress ---------------------------------------

#: File descriptors a node keeps for its own files, peer links and snapshots: inbound
#: connections are capped this far below the open-file limit, so a flood of clients is
#: refused at the door instead of leaving the node unable to open its log.
FDS_RESERVED = 256
#: The open-file limit a node asks for when the hard limit allows (the default soft
#: limit, often 1,024, would cap inbound connections far below MAX_INBOUND_CONNECTIONS).
FDS_WANTED = 65_536
#: Inbound connections allowed however low the open-file limit: a node must always be
#: reachable by a few clients and its peers.
MIN_INBOUND_CONNECTIONS = 16
#: Retries of one pending command that wait on its log entry; beyond it a retry is
#: appended again (the session table still applies it once). Eight covers a client
#: retrying through every member of a nine-node cluster while the entry commits.
MAX_RETRIES_JOINED = 8
#: Received snapshots whose bytes wait in memory for the core to take one: each is a
#: whole service state, and the core installs the newest it accepts at the next batch
#: (two cover a stale one arriving right behind a fresh one).
RECEIVED_SNAPSHOTS_KEPT = 2

# -- service container ----------------------------------------------------------------

#: Pushed messages waiting for the node to deliver them. The node takes them every
#: Ready, so only a Ready that applies a huge batch of pushing commands comes near;
#: the oldest are dropped past it (each session also keeps its own bounded copy for
#: replay on resubscribe, `max_egress_per_session`).
MAX_PENDING_EGRESS = 65_536
#: Checkpoints kept for sending and comparing: the node sends them every Ready, so a
#: few would do; 64 covers a long stall at one per `checkpoint_every_entries`.
MAX_PENDING_CHECKPOINTS = 64
#: Longest exception text carried in an error reply (characters): enough for any
#: honest message, and an exception that prints megabytes cannot fill the log.
ERROR_MESSAGE_CHARS_MAX = 500
#: Stack frames service code may use beyond `apply_batch`, the same on every replica
#: (an outcome must not depend on how deep the caller ran). Python's default limit is
#: 1000; 900 leaves the caller's frames room.
SERVICE_STACK_FRAMES = 900
#: Timers a service may have scheduled at once: each is a heap entry replicated in
#: every snapshot; a service that needs more is leaking them.
MAX_TIMERS = 100_000

# -- divergence checks, identity, rebuilds ----------------------------------------------

#: Checkpoint indices whose peers' digests are tracked at once; older ones are
#: forgotten. Peers report within a few heartbeats, so a checkpoint still undecided
#: after 16 newer ones will not be.
MAX_TRACKED_CHECKPOINTS = 16
#: Largest `cluster.json` read: a handful of members and names is a few hundred bytes,
#: so anything bigger is not ours and is refused before it is parsed.
IDENTITY_BYTES_MAX = 64 * 1024
#: Snapshots `phalanx replay-check` reads from one directory (a node keeps
#: `snapshots_keep`, 2 by default); the bound only stops a directory of junk.
SNAPSHOTS_READ_MAX = 10_000

# -- storage --------------------------------------------------------------------------

#: The largest payload a write-ahead log record may carry. A length field above it is
#: corruption (or a torn tail), never an allocation request. A record holds one entry,
#: and a command is at most `max_command_bytes` (1 MiB by default).
RECORD_PAYLOAD_BYTES_MAX = 64 * 1024 * 1024
#: Largest payload of the small files (hard state, meta): they hold a few integers, so
#: a larger length is damage.
SMALL_FILE_BYTES_MAX = 64 * 1024
#: Bytes a log segment is preallocated to and rolled over at: large enough that a
#: busy node rolls rarely, small enough that compaction frees space in useful steps.
SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024
#: A segment file larger than this is not ours (a segment holds at most
#: `segment_bytes_max` bytes, or one record of up to `RECORD_PAYLOAD_BYTES_MAX`), and is
#: refused before it is read.
SEGMENT_FILE_BYTES_LIMIT = 4 * 1024 * 1024 * 1024
#: The largest content a snapshot may hold; a header claiming more is corruption.
SNAPSHOT_CONTENT_BYTES_MAX = 4 * 1024 * 1024 * 1024
#: How much received snapshot content may be lost to a power loss: a receive is synced
#: and its length recorded every this many bytes, so a resumed transfer repeats at most
#: this much.
SNAPSHOT_CHECKPOINT_BYTES = 16 * 1024 * 1024
#: The largest chunk a snapshot is read and sent in (`snapshot_chunk_bytes` may not
#: exceed it): a chunk is held in memory whole.
SNAPSHOT_CHUNK_BYTES_MAX = 64 * 1024 * 1024
