"""FrameDecoder on a hostile line: any chunking, garbage, corrupted CRCs, truncated and oversize frames,
sequence gaps. Every valid message after the damage must come out, and the damage must be counted."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from edge_anytime.serial.protocol import (FLAG_SEQ_RESET, HEADER, MAGIC, Frame, FrameDecoder, LinkStats, Ping,
                                          Refinement, Result, crc32, encode)
from edge_anytime.results import StopReason


def sample_messages(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(Frame.from_array(i, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), budget_s=0.01))
        elif kind == 1:
            out.append(Result(i, StopReason.DEADLINE, 1, 3, 0.5, top_k=((3, 0.5), (1, 0.25))))
        elif kind == 2:
            out.append(Refinement(i, 0, 2, 0.25))
        else:
            out.append(Ping(i))
    return out


def stream(messages, first_seq: int = 0) -> list[bytes]:
    return [encode(m, (first_seq + i) & 0xFFFF, FLAG_SEQ_RESET if i == 0 else 0) for i, m in enumerate(messages)]


def feed_chunked(decoder: FrameDecoder, data: bytes, rng: random.Random, max_chunk: int = 64) -> list:
    out, at = [], 0
    while at < len(data):
        size = rng.choice([1, 1, 2, 3, rng.randint(1, max_chunk), rng.randint(1, 4 * max_chunk)])
        out += decoder.feed(data[at:at + size])
        at += size
    return out


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking_loses_nothing(seed):
    messages = sample_messages(24, seed)
    data = b"".join(stream(messages))
    decoder = FrameDecoder()
    got = feed_chunked(decoder, data, random.Random(seed))
    assert got == messages
    s = decoder.stats
    assert (s.messages, s.garbage_bytes, s.errors, s.bytes_received, decoder.pending) == (24, 0, 0, len(data), 0)


def noise(rng: random.Random, n: int) -> bytes:
    """Random bytes, salted with magic bytes and fake headers so the decoder has to reject them."""
    parts = []
    while sum(map(len, parts)) < n:
        pick = rng.random()
        if pick < 0.15:
            parts.append(MAGIC)
        elif pick < 0.25:  # a well-formed header with a wrong CRC
            parts.append(HEADER.pack(MAGIC, 1, 0x10, 0, 0, rng.randint(0, 0xFFFF), rng.randint(0, 100)) + b"\0\0\0\0")
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    return b"".join(parts)


@pytest.mark.parametrize("seed", range(20))
def test_garbage_between_frames_is_counted_and_skipped(seed):
    rng = random.Random(seed)
    messages = sample_messages(16, seed)
    frames = stream(messages)
    junk = [noise(rng, rng.randint(0, 60)) for _ in frames] + [b""]
    data = b"".join(j + f for j, f in zip(junk, frames + [b""]))
    decoder = FrameDecoder()
    got = feed_chunked(decoder, data, rng) + decoder.flush()
    assert got == messages
    s = decoder.stats
    assert s.garbage_bytes == sum(map(len, junk))
    assert s.bytes_received == len(data) and decoder.pending == 0
    assert s.lost == s.duplicates == s.out_of_order == s.bad_crc == 0
    assert s.resyncs == sum(1 for j in junk[:len(frames)] if j)


@pytest.mark.parametrize("seed", range(10))
def test_corrupted_frames_are_dropped_and_the_rest_delivered(seed):
    rng = random.Random(seed)
    messages = sample_messages(12, seed)
    frames = [bytearray(f) for f in stream(messages)]
    victims = sorted(rng.sample(range(1, 11), 3))      # not the last: a gap shows only when the next one comes
    flipped = {}
    for v in victims:
        flipped[v] = rng.randrange(len(frames[v]))
        frames[v][flipped[v]] ^= 1 << rng.randrange(8)
    decoder = FrameDecoder()
    got = feed_chunked(decoder, b"".join(frames), rng)
    assert got == [m for i, m in enumerate(messages) if i not in victims]
    s = decoder.stats
    assert s.bad_crc + s.bad_header_crc == sum(1 for v in victims if flipped[v] >= 2)  # a hit magic: just noise
    assert s.truncated == 0
    assert s.lost == len(victims)                        # the sequence numbers show the holes
    assert s.garbage_bytes == sum(len(frames[v]) for v in victims)


def test_truncated_frame_is_cut_short_by_the_next_valid_header_when_asked():
    messages = sample_messages(6)
    frames = stream(messages)
    cut = frames[2][:len(frames[2]) // 2]               # the sender reset halfway through frame 2
    decoder = FrameDecoder(interrupt_on_header=True)
    got = []
    for chunk in frames[:2] + [cut] + frames[3:]:
        got += decoder.feed(chunk)
        if chunk is frames[3]:
            assert got[-1] == messages[3]                # delivered at once, not after frame 2's length
    assert got == messages[:2] + messages[3:]
    s = decoder.stats
    assert (s.truncated, s.garbage_bytes, s.lost) == (1, len(cut), 1)


@pytest.mark.parametrize("interrupt", [True, False])
def test_a_frame_cut_short_by_a_shorter_one_and_an_idle_line(interrupt):
    messages = sample_messages(3)
    frames = stream(messages)
    cut = frames[0][:100]                                # frame 0 declares 240 bytes; only 100 come
    decoder = FrameDecoder(interrupt_on_header=interrupt)
    got = decoder.feed(cut + frames[1])
    if not interrupt:
        assert got == []                                 # still waiting for frame 0's declared length
        got = decoder.flush()                            # the line went idle: give up on frame 0
    assert got == [messages[1]]
    assert decoder.feed(frames[2]) == [messages[2]] and decoder.pending == 0
    assert (decoder.stats.truncated, decoder.stats.bad_crc, decoder.stats.garbage_bytes) == (1, 0, 100)


def test_flush_drops_a_partial_frame_at_the_end():
    wire = encode(Ping(1))
    decoder = FrameDecoder()
    assert decoder.feed(wire[:-3]) == [] and decoder.pending == len(wire) - 3
    assert decoder.flush() == []
    assert (decoder.stats.truncated, decoder.stats.garbage_bytes, decoder.pending) == (1, len(wire) - 3, 0)
    assert decoder.feed(MAGIC[:1]) == [] and decoder.pending == 1   # could be the start of a magic
    assert decoder.feed(wire[1:]) == [Ping(1)]


def test_oversize_length_is_rejected_without_waiting_for_it():
    big = encode(Frame.from_array(1, np.zeros((64, 64, 3), np.uint8), budget_s=0.01), seq=0, flags=FLAG_SEQ_RESET)
    small = encode(Ping(2), seq=1)
    decoder = FrameDecoder(max_payload=4096)
    assert decoder.feed(big + small) == [Ping(2)]
    s = decoder.stats
    assert (s.oversize, s.garbage_bytes) == (1, len(big))


def test_other_protocol_versions_are_counted_and_skipped():
    wire = bytearray(encode(Ping(1)))
    wire[2] = 2
    wire[12:16] = struct.pack("<I", crc32(bytes(wire[:12])))
    decoder = FrameDecoder()
    assert decoder.feed(bytes(wire) + encode(Ping(3), seq=1)) == [Ping(3)]
    assert decoder.stats.bad_version == 1


def test_sequence_policy():
    decoder = FrameDecoder()
    wires = [encode(Ping(i), seq) for i, seq in enumerate([10, 11, 11, 14, 12, 13])]
    got = decoder.feed(b"".join(wires[:2] + [wires[1]] + wires[3:]))  # message 1 repeated byte for byte
    assert [m.token for m in got] == [0, 1, 3, 4, 5]                  # the duplicate is dropped
    s = decoder.stats
    assert (s.duplicates, s.lost, s.out_of_order) == (1, 2, 1)       # 12, 13 missing; 14 -> 12 backwards
    assert [m.seq for m in got] == [10, 11, 14, 12, 13]
    reused = FrameDecoder()                                           # another message under a reused seq
    assert [m.token for m in reused.feed(b"".join(wires[:3]))] == [0, 1, 2]
    assert (reused.stats.duplicates, reused.stats.reused_seq) == (0, 1)
    restart = decoder.feed(encode(Ping(8), 0, FLAG_SEQ_RESET) + encode(Ping(9), 1))
    assert [m.token for m in restart] == [8, 9]
    assert decoder.stats.out_of_order == 1                            # a flagged restart is not an error
    wrap = FrameDecoder()
    assert len(wrap.feed(b"".join(encode(Ping(0), seq) for seq in (0xFFFE, 0xFFFF, 0, 1)))) == 4
    assert wrap.stats.errors == 0


def test_stats_are_a_frozen_snapshot():
    decoder = FrameDecoder()
    before = decoder.stats
    decoder.feed(b"xyz")
    assert isinstance(before, LinkStats) and before.garbage_bytes == 0 and decoder.stats.garbage_bytes == 3
    with pytest.raises(AttributeError):
        before.messages = 5


def test_one_byte_chunks_of_a_large_frame_stay_fast():
    frame = Frame.from_array(1, np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8),
                             budget_s=0.01)
    wire = encode(frame)
    decoder = FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i:i + 1])
    assert got == [frame]


def test_a_payload_holding_a_valid_header_is_never_scanned_while_it_arrives():
    inner = encode(Ping(0xBADC0DE), seq=7)                     # a complete valid message hidden in the pixels
    pixels = (inner * 8)[:3 * 8 * 8]
    frame = Frame(5, pixels, (8, 8, 3), budget_us=1000)
    wire = encode(frame, seq=1)
    for split in (20, 30, len(wire) // 2, len(wire) - 5):     # whatever the chunking
        decoder = FrameDecoder()
        got = decoder.feed(wire[:split]) + decoder.feed(wire[split:])
        assert got == [frame] and decoder.stats.truncated == 0, split


def test_a_truncated_frame_is_found_once_its_length_arrived_or_the_line_idles():
    messages = sample_messages(4)
    frames = stream(messages)
    cut = frames[1][:len(frames[1]) // 2]
    decoder = FrameDecoder()
    got = decoder.feed(frames[0] + cut + b"".join(frames[2:]))
    got += decoder.flush()
    assert got == [messages[0]] + messages[2:]
    assert decoder.stats.truncated + decoder.stats.bad_crc == 1
