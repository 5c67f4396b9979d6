"""The binary layout of a session's segment: written once here, checked on every attach.

Segment `/dev/shm/asyncinf.<run>.g<gen>.seg`, LAYOUT_VERSION 2.
Every field is a little-endian signed 64-bit word ("i64") at an 8-aligned offset; -1 means
"none". Aligned 8-byte loads and stores are single instructions on x86-64 and aarch64, so
the unlocked words (heartbeats, corrupt) are never torn, only possibly a little stale.

    offset  field                 meaning                                     written
    ------  --------------------  ------------------------------------------  ---------------
         0  magic                 b"asyncinf" (8 bytes)                        creator, once
         8  layout_version        LAYOUT_VERSION                              creator, once
        16  header_bytes          H: size of this header, tables included     creator, once
        24  segment_bytes         total size of the segment                   creator, once
        32  generation            the g<gen> of the name                      creator, once
        40  obs_slots             N_o >= 3                                    creator, once
        48  obs_slot_bytes        S_o: a frame must fit in S_o                creator, once
        56  chunk_slots           N_c                                         creator, once
        64  chunk_slot_bytes      S_c                                         creator, once
        72  control_slots         N_k (each control ring)                     creator, once
        80  control_slot_bytes    S_k                                         creator, once
        88  when_full             0 = block, 1 = error                        creator, once
        96  heartbeat_interval_ns                                             creator, once
       104  peer_timeout_ns                                                   creator, once
       112  spin_ns               doorbell poll before blocking               creator, once
       120  creator_pid           the supervisor                              creator, once
       128  client_pid            0 = no client attached                      client, up-lock
       136  client_heartbeat_ns   CLOCK_MONOTONIC of the client's last beat   client, no lock
       192  server_pid            0 = no server attached                      server, down-lock
       200  server_heartbeat_ns   CLOCK_MONOTONIC of the server's last beat   server, no lock
       256  obs_seq               observations published so far               under up-lock
       264  obs_latest            slot of the newest published one, or -1     under up-lock
       272  obs_leased            slot the server holds, or -1                under up-lock
       280  upctl_head            control frames pushed client→server         under up-lock
       288  upctl_tail            control frames taken by the server          under up-lock
       296  upctl_dropped         oldest frames overwritten when full         under up-lock
       304  obs_taken_seq         seq of the newest frame the server took     under up-lock
       320  down_seq              frames sent server→client (chunks+control)  under down-lock
       328  chunk_head            chunks pushed                               under down-lock
       336  chunk_tail            chunks freed by the client                  under down-lock
       344  dnctl_head            control frames pushed server→client         under down-lock
       352  dnctl_tail            control frames taken by the client          under down-lock
       360  dnctl_dropped         oldest frames overwritten when full         under down-lock
       368  checksum              0 none, 1 frames, 2 all (integrity.py)      creator, once
       376  corrupt               0, or where an end found the segment        first finder, no
                                  corrupt (integrity.REGIONS + 16 × side)     lock
       384  obs table             N_o × 5 i64: frame_bytes, sent_ns, seq,     under up-lock
                                  crc, crc_bytes (the CRC covers the frame's
                                  first crc_bytes)
         …  chunk table           N_c × 4 i64: frame_bytes, seq, pos, crc     under down-lock
         …  upctl table           N_k × 4 i64: frame_bytes, seq, pos, crc     under up-lock
         …  dnctl table           N_k × 4 i64: frame_bytes, seq, pos, crc     under down-lock
         H  obs slots             N_o × align4096(S_o) bytes of frames
         …  chunk slots           N_c × align4096(S_c)
         …  upctl slots           N_k × align4096(S_k)
         …  dnctl slots           N_k × align4096(S_k)
       end  = segment_bytes

    H = align4096(384 + 8 × (5·N_o + 4·N_c + 8·N_k)); slot i of a ring is entry (count % N).
    `pos` is the head count the frame was published at: a reader at tail t expects pos = t,
    so a head or tail moved by a stray write never replays an old frame. `crc` is zlib's
    CRC-32 of the frame (0 when checksum is none).

Frames in slots are `asyncinf.transports.codec` frames. Heads, tails and seqs only grow.
Ordering: payload bytes are written outside the lock, then published (table entry, index)
under the lock; the semaphore's acquire/release pair is the barrier that makes the bytes
visible to the reader who takes the same lock (x86-64 and aarch64 alike).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from asyncinf.runtime.errors import LayoutError
from asyncinf.transports.base import WhenFull
from asyncinf.transports.shm.config import ShmConfig
from asyncinf.transports.shm.integrity import CHECKSUM_CODES

MAGIC = b"asyncinf"
LAYOUT_VERSION = 2
PAGE = 4096
NONE = -1

# Word indexes (byte offset / 8) of the header fields above.
W_MAGIC = 0
W_VERSION = 1
W_HEADER_BYTES = 2
W_SEGMENT_BYTES = 3
W_GENERATION = 4
W_OBS_SLOTS = 5
W_OBS_SLOT_BYTES = 6
W_CHUNK_SLOTS = 7
W_CHUNK_SLOT_BYTES = 8
W_CONTROL_SLOTS = 9
W_CONTROL_SLOT_BYTES = 10
W_WHEN_FULL = 11
W_HEARTBEAT_INTERVAL_NS = 12
W_PEER_TIMEOUT_NS = 13
W_SPIN_NS = 14
W_CREATOR_PID = 15
W_CLIENT_PID = 16
W_CLIENT_HB = 17
W_SERVER_PID = 24
W_SERVER_HB = 25
W_OBS_SEQ = 32
W_OBS_LATEST = 33
W_OBS_LEASED = 34
W_UPCTL_HEAD = 35
W_UPCTL_TAIL = 36
W_UPCTL_DROPPED = 37
W_OBS_TAKEN = 38
W_DOWN_SEQ = 40
W_CHUNK_HEAD = 41
W_CHUNK_TAIL = 42
W_DNCTL_HEAD = 43
W_DNCTL_TAIL = 44
W_DNCTL_DROPPED = 45
W_CHECKSUM = 46
W_CORRUPT = 47
W_TABLES = 48  # byte offset 384

OBS_ENTRY_WORDS = 5  # frame_bytes, sent_ns, seq, crc, crc_bytes
RING_ENTRY_WORDS = 4  # frame_bytes, seq, pos, crc

_WHEN_FULL_CODES = {WhenFull.BLOCK: 0, WhenFull.ERROR: 1}


def _page_align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@dataclass(frozen=True)
class Area:
    """A ring of equal slots: its table's first word and its slots' first byte."""

    slots: int
    slot_bytes: int
    stride: int  # bytes between slots (page-aligned)
    table_word: int  # word index of entry 0 in the header tables
    entry_words: int
    data: int  # byte offset of slot 0

    def slot_offset(self, i: int) -> int:
        return self.data + i * self.stride

    def entry(self, i: int) -> int:
        """Word index of slot i's table entry."""
        return self.table_word + i * self.entry_words

    def views(self, raw: memoryview) -> list[memoryview]:
        """One view per slot on the segment's bytes `raw`; `release_views` before unmapping."""
        return [
            raw[self.slot_offset(i) : self.slot_offset(i) + self.slot_bytes]
            for i in range(self.slots)
        ]


def release_views(views: list[memoryview]) -> None:
    """Release slot views; one still exported (a decoded array is alive) is left to the GC."""
    for view in views:
        with contextlib.suppress(BufferError):
            view.release()


@dataclass(frozen=True)
class Layout:
    """Where everything is, computed from the sizes (never from a peer's offsets)."""

    generation: int
    config: ShmConfig
    header_bytes: int
    segment_bytes: int
    obs: Area
    chunks: Area
    upctl: Area
    dnctl: Area

    @classmethod
    def compute(cls, config: ShmConfig, generation: int) -> Layout:
        c = config
        tw = W_TABLES
        obs_tw = tw
        chunk_tw = obs_tw + c.obs_slots * OBS_ENTRY_WORDS
        upctl_tw = chunk_tw + c.chunk_slots * RING_ENTRY_WORDS
        dnctl_tw = upctl_tw + c.control_slots * RING_ENTRY_WORDS
        end_tw = dnctl_tw + c.control_slots * RING_ENTRY_WORDS
        header_bytes = _page_align(end_tw * 8)
        offset = header_bytes
        areas = []
        for slots, size, table, words in (
            (c.obs_slots, c.obs_slot_bytes, obs_tw, OBS_ENTRY_WORDS),
            (c.chunk_slots, c.chunk_slot_bytes, chunk_tw, RING_ENTRY_WORDS),
            (c.control_slots, c.control_slot_bytes, upctl_tw, RING_ENTRY_WORDS),
            (c.control_slots, c.control_slot_bytes, dnctl_tw, RING_ENTRY_WORDS),
        ):
            stride = _page_align(size)
            areas.append(Area(slots, size, stride, table, words, offset))
            offset += slots * stride
        return cls(generation, config, header_bytes, offset, *areas)

    def header_words(self, creator_pid: int) -> dict[int, int]:
        """The creator's values of every fixed field except the magic."""
        c = self.config
        return {
            W_VERSION: LAYOUT_VERSION,
            W_HEADER_BYTES: self.header_bytes,
            W_SEGMENT_BYTES: self.segment_bytes,
            W_GENERATION: self.generation,
            W_OBS_SLOTS: c.obs_slots,
            W_OBS_SLOT_BYTES: c.obs_slot_bytes,
            W_CHUNK_SLOTS: c.chunk_slots,
            W_CHUNK_SLOT_BYTES: c.chunk_slot_bytes,
            W_CONTROL_SLOTS: c.control_slots,
            W_CONTROL_SLOT_BYTES: c.control_slot_bytes,
            W_WHEN_FULL: _WHEN_FULL_CODES[c.when_full],
            W_HEARTBEAT_INTERVAL_NS: round(c.heartbeat_interval_s * 1e9),
            W_PEER_TIMEOUT_NS: round(c.peer_timeout_s * 1e9),
            W_SPIN_NS: c.spin_us * 1000,
            W_CHECKSUM: CHECKSUM_CODES[c.checksum],
            W_CREATOR_PID: creator_pid,
            W_CLIENT_PID: 0,
            W_SERVER_PID: 0,
            W_OBS_LATEST: NONE,
            W_OBS_LEASED: NONE,
        }


def write_header(words: memoryview, raw: memoryview, layout: Layout, creator_pid: int) -> None:
    """Fill a fresh (all-zero) segment's header. The magic goes last: a reader that sees
    it sees a complete header (children are started after this returns anyway)."""
    for index, value in layout.header_words(creator_pid).items():
        words[index] = value
    raw[0:8] = MAGIC


_SIZE_FIELDS = (
    ("obs_slots", W_OBS_SLOTS),
    ("obs_slot_bytes", W_OBS_SLOT_BYTES),
    ("chunk_slots", W_CHUNK_SLOTS),
    ("chunk_slot_bytes", W_CHUNK_SLOT_BYTES),
    ("control_slots", W_CONTROL_SLOTS),
    ("control_slot_bytes", W_CONTROL_SLOT_BYTES),
)


def read_layout(
    name: str,
    *,
    words: memoryview,
    raw: memoryview,
    actual_bytes: int,
    generation: int,
    expected: ShmConfig | None = None,
) -> Layout:
    """Check a segment's header against this build (and `expected`, when given).

    Raises LayoutError naming the first field that differs, what was expected and what
    the segment holds.
    """

    def fail(field: str, want: object, got: object) -> LayoutError:
        return LayoutError(
            f"shared-memory segment {name}: header field {field!r} expected {want!r}, got {got!r}"
        )

    if actual_bytes < W_TABLES * 8:
        raise fail("segment_bytes", f">= {W_TABLES * 8}", actual_bytes)
    magic = bytes(raw[0:8])
    if magic != MAGIC:
        raise fail("magic", MAGIC, magic)
    if words[W_VERSION] != LAYOUT_VERSION:
        raise fail("layout_version", LAYOUT_VERSION, words[W_VERSION])
    if words[W_GENERATION] != generation:
        raise fail("generation", generation, words[W_GENERATION])
    codes = {v: k for k, v in _WHEN_FULL_CODES.items()}
    if words[W_WHEN_FULL] not in codes:
        raise fail("when_full", sorted(codes), words[W_WHEN_FULL])
    checksums = {v: k for k, v in CHECKSUM_CODES.items()}
    if words[W_CHECKSUM] not in checksums:
        raise fail("checksum", sorted(checksums), words[W_CHECKSUM])
    sizes = {field: words[w] for field, w in _SIZE_FIELDS}
    if expected is not None:
        for field, got in sizes.items():
            if getattr(expected, field) != got:
                raise fail(field, getattr(expected, field), got)
    try:
        config = ShmConfig(
            **sizes,
            when_full=codes[words[W_WHEN_FULL]],
            heartbeat_interval_s=words[W_HEARTBEAT_INTERVAL_NS] / 1e9,
            peer_timeout_s=words[W_PEER_TIMEOUT_NS] / 1e9,
            spin_us=words[W_SPIN_NS] // 1000,
            checksum=checksums[words[W_CHECKSUM]],
        )
    except ValueError as exc:  # ConfigError: a size out of range
        raise LayoutError(f"shared-memory segment {name}: {exc}") from None
    layout = Layout.compute(config, generation)
    if words[W_HEADER_BYTES] != layout.header_bytes:
        raise fail("header_bytes", layout.header_bytes, words[W_HEADER_BYTES])
    if words[W_SEGMENT_BYTES] != layout.segment_bytes:
        raise fail("segment_bytes", layout.segment_bytes, words[W_SEGMENT_BYTES])
    if actual_bytes != layout.segment_bytes:
        raise fail("segment_bytes (file size)", layout.segment_bytes, actual_bytes)
    return layout
