"""Capture file reader: pcap and pcapng records out of a file, as fast as Python allows.

First stage of the capture source (``reader -> packets -> flows -> parsers -> engine``). It
knows file formats and nothing of what the packets hold. ``open_capture`` checks the file
eagerly (so a bad file fails with a one-line ``CaptureError`` before any work) and returns a
``Capture`` whose ``records()`` are ``(timestamp, linktype, frame bytes)``.

Supported: classic pcap (microsecond and nanosecond magic, either byte order), pcapng (several
sections and interfaces, each with its own link type, ``if_tsresol`` and ``if_tsoffset``;
enhanced, simple and obsolete packet blocks), and either of those gzip-compressed.

Reading is chunked (``READ_CHUNK`` bytes at a time), so memory does not grow with the file. A
file cut in the middle of a record keeps everything before it and counts
``skipped["truncated-file"]``.
"""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from auditor.capture import CaptureError

# Bytes read from the file at a time: large enough that the per-chunk cost vanishes.
READ_CHUNK = 1 << 20
# A record claiming more than this is corrupt, not a packet (pcap snaplen is at most 256 KiB;
# pcapng blocks of a few MiB exist only for huge jumbo/loopback frames).
MAX_RECORD = 16 << 20
# Report progress every this many bytes of file read.
PROGRESS_EVERY = 4 << 20

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D

# pcapng block types
_IDB = 0x00000001
_OBSOLETE_PB = 0x00000002
_SPB = 0x00000003
_EPB = 0x00000006

Record = tuple[float, int, bytes]  # (epoch seconds, link type, captured frame)
ProgressCallback = Callable[[int], None]  # bytes of the file read so far


def _describe(head: bytes) -> str:
    """What a file that is not a capture looks like, for the error message."""
    if head[:2] == b"\x1f\x8b":
        return "gzip data that does not hold a capture"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd-compressed data (decompress it first)"
    if head[:3] == b"BZh":
        return "bzip2-compressed data (decompress it first)"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz-compressed data (decompress it first)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (extract it first)"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:64]):
        return "text"
    return f"unknown data (starts with {head[:4].hex()})"


def _open_raw(path: Path) -> tuple[BinaryIO, BinaryIO, bool]:
    """(stream to read records from, underlying file for progress, compressed?)."""
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
    head = raw.read(2)
    raw.seek(0)
    if head == b"\x1f\x8b":
        return _GzipStream(raw), raw, True  # type: ignore[return-value]
    return raw, raw, False


class _GzipStream:
    """Streaming gzip decompression that, unlike ``gzip.GzipFile``, hands out everything
    decoded before a truncation or corruption (then raises ``EOFError``/``zlib.error`` once
    nothing is left). Concatenated gzip members are read one after the other."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._pending = b""  # compressed bytes not yet fed (decompression was bounded)
        self._out = bytearray()
        self._error: Exception | None = None
        self._done = False
        self._in_member = False  # the current member has started and not ended

    def read(self, size: int) -> bytes:
        while len(self._out) < size and not self._done:
            try:
                self._fill(size - len(self._out))
            except zlib.error as exc:
                self._error, self._done = exc, True
        if not self._out and self._error is not None:
            error, self._error = self._error, None
            raise error
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def _fill(self, want: int) -> None:
        if not self._pending:
            self._pending = self._raw.read(READ_CHUNK)
            if not self._pending:
                self._done = True
                if self._in_member:
                    self._error = EOFError("compressed file ended before the end of the stream")
                return
        data, self._pending = self._pending, b""
        self._in_member = True
        self._out += self._decompressor.decompress(data, max(want, 65536))
        self._pending = self._decompressor.unconsumed_tail
        if self._decompressor.eof:
            rest = self._decompressor.unused_data + self._pending
            self._decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
            self._pending = rest.lstrip(b"\0")  # padding between members is allowed
            self._in_member = False


class Capture:
    """An opened capture file: its format, and its records as an iterator or raw buffers.

    ``records()`` yields ``(timestamp, linktype, frame)`` for either format. For classic pcap,
    ``refill`` additionally hands out the raw buffer so that the engine's packet loop can read
    record headers itself (``record_header``, ``frac_scale``, ``linktype``) and skip making a
    bytes object for packets it only counts: the hot loop of the whole tool.
    """

    def __init__(
        self,
        path: Path,
        stream: BinaryIO,
        raw: BinaryIO,
        head: bytes,
        kind: str,
        skipped: Counter[str],
        progress: ProgressCallback | None,
    ) -> None:
        self.path = path
        self.kind = kind  # "pcap" | "pcapng"
        self._stream = stream
        self._raw = raw
        self._head = head
        self._skipped = skipped
        self._progress = progress
        self._next_report = PROGRESS_EVERY
        self._seekable = stream is raw  # a plain file; gzip streams only emulate seeking
        self.linktype = -1
        self.frac_scale = 1e-6
        self.byte_order = "<"  # of the pcap record headers ("<" or ">")
        self.record_header = struct.Struct("<IIII").unpack_from
        if kind == "pcap":
            order = (
                "<" if struct.unpack_from("<I", head)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
            )
            magic = struct.unpack_from(order + "I", head)[0]
            # The fraction field counts micro- or nanoseconds depending on the magic.
            self.frac_scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
            # Upper bits of the link type field may carry FCS information (pcap spec).
            self.linktype = struct.unpack_from(order + "I", head, 20)[0] & 0x0FFFFFFF
            self.byte_order = order
            self.record_header = struct.Struct(order + "IIII").unpack_from

    def close(self) -> None:
        self._report()
        self._raw.close()

    def _report(self) -> None:
        if self._progress is not None:
            with contextlib.suppress(OSError, ValueError):  # file closed under us: no report
                self._progress(self._raw.tell())

    def note_progress(self) -> None:
        """Call the progress callback when another ``PROGRESS_EVERY`` bytes have been read."""
        done = self._raw.tell()
        if done >= self._next_report:
            self._report()
            self._next_report = done + PROGRESS_EVERY

    def refill(self, buf: bytes, pos: int, chunk_size: int = READ_CHUNK) -> bytes | None:
        """pcap: ``buf[pos:]`` (an incomplete record) followed by about ``chunk_size`` more
        bytes of the file.

        None at the end of the file (a partial record left over counts as
        ``skipped["truncated-file"]``) or when the next record is corrupt.
        """
        if pos + 16 <= len(buf):
            caplen = self.record_header(buf, pos)[2]
            if caplen > MAX_RECORD:
                self._skipped["corrupt-record"] += 1
                return None
            want = max(chunk_size, 16 + caplen)
        else:
            want = chunk_size
        left = len(buf) - pos
        if left and self._seekable:
            # Read the partial record again rather than copy it in front of the new chunk:
            # one copy of every byte instead of two.
            self._stream.seek(-left, io.SEEK_CUR)
            chunk = _read(self._stream, want, self._skipped)
            if len(chunk) <= left:
                self._skipped["truncated-file"] += 1
                return None
            self.note_progress()
            return chunk
        chunk = _read(self._stream, want, self._skipped)
        if not chunk:
            if left:
                self._skipped["truncated-file"] += 1
            return None
        self.note_progress()
        return buf[pos:] + chunk if left else chunk

    def records(self) -> Iterator[Record]:
        """Every record as ``(timestamp, linktype, frame)``; closes the file at the end."""
        if self.kind == "pcapng":
            return _pcapng_records(self, self._stream, self._head, self._skipped)
        return self._pcap_records()

    def _pcap_records(self) -> Iterator[Record]:
        record_header = self.record_header
        linktype = self.linktype
        frac_scale = self.frac_scale
        buf: bytes | None = b""
        pos = 0
        try:
            while True:
                buf = self.refill(buf, pos)  # type: ignore[arg-type]
                if buf is None:
                    return
                pos = 0
                end_buf = len(buf)
                while pos + 16 <= end_buf:
                    sec, frac, caplen, _origlen = record_header(buf, pos)
                    end = pos + 16 + caplen
                    if end > end_buf:
                        break
                    yield sec + frac * frac_scale, linktype, buf[pos + 16 : end]
                    pos = end
        finally:
            self.close()


def open_capture(
    path: str | Path, skipped: Counter[str], progress: ProgressCallback | None = None
) -> Capture:
    """Check ``path`` is a capture and open it (read records with ``Capture.records()``).

    Raises ``CaptureError`` (one line, naming the file) when the file cannot be read at all.
    Problems inside the file are counted in ``skipped`` and never raised.
    """
    path = Path(path)
    stream, raw, compressed = _open_raw(path)
    try:
        head = stream.read(24)
    except (OSError, EOFError, zlib.error) as exc:
        raw.close()
        raise CaptureError(f"{path}: gzip data cannot be decompressed ({exc})") from None
    if not head:
        raw.close()
        what = "empty gzip-compressed file" if compressed else "empty file"
        raise CaptureError(f"{path}: {what}, no capture header")
    magic_le = struct.unpack_from("<I", head + b"\0\0\0\0")[0]
    magic_be = struct.unpack_from(">I", head + b"\0\0\0\0")[0]
    if PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
        if len(head) < 24:
            raw.close()
            raise CaptureError(f"{path}: truncated pcap header ({len(head)} of 24 bytes)")
        return Capture(path, stream, raw, head, "pcap", skipped, progress)
    if magic_le == PCAPNG_SHB:
        if len(head) < 12:
            raw.close()
            raise CaptureError(f"{path}: truncated pcapng section header")
        return Capture(path, stream, raw, head, "pcapng", skipped, progress)
    raw.close()
    if compressed:
        inner = _describe(head).replace("gzip data that does not hold a capture", "gzip data")
        raise CaptureError(f"{path}: not a pcap or pcapng file (gzip-compressed {inner})")
    raise CaptureError(f"{path}: not a pcap or pcapng file ({_describe(head)})")


def _read(stream: BinaryIO, size: int, skipped: Counter[str]) -> bytes:
    """Read a chunk; a corrupt gzip stream ends the file like a truncation (counted)."""
    try:
        return stream.read(size)
    except (OSError, EOFError, zlib.error):
        skipped["corrupt-gzip"] += 1
        return b""


class _Interface:
    __slots__ = ("linktype", "offset", "scale")

    def __init__(self, linktype: int, scale: float, offset: float) -> None:
        self.linktype = linktype
        self.scale = scale  # seconds per timestamp unit
        self.offset = offset  # seconds added to every timestamp


def _parse_idb(body: bytes, order: str) -> _Interface:
    """An Interface Description Block body (after type and length) -> link type and time base."""
    linktype = struct.unpack_from(order + "H", body, 0)[0]
    scale = 1e-6
    offset = 0.0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        value = body[pos + 4 : pos + 4 + length]
        if code == 0:  # opt_endofopt
            break
        if code == 9 and length >= 1:  # if_tsresol: 10^-n, or 2^-n when the high bit is set
            resol = value[0]
            scale = 2.0 ** -(resol & 0x7F) if resol & 0x80 else 10.0**-resol
        elif code == 14 and length >= 8:  # if_tsoffset: seconds added to every timestamp
            offset = float(struct.unpack_from(order + "q", value)[0])
        pos += 4 + ((length + 3) & ~3)
    return _Interface(linktype, scale, offset)


def _pcapng_records(
    capture: Capture, stream: BinaryIO, head: bytes, skipped: Counter[str]
) -> Iterator[Record]:
    """Records of a pcapng file (first 24 bytes already read)."""
    buf = head
    pos = 0
    order = "<"
    interfaces: list[_Interface] = []
    unpack_u32 = struct.Struct("<I").unpack_from
    block_header = struct.Struct("<II").unpack_from
    epb_header = struct.Struct("<IIIII").unpack_from
    last_ts = 0.0
    try:
        while True:
            end_buf = len(buf)
            while pos + 12 <= end_buf:
                btype, blen = block_header(buf, pos)
                if btype == PCAPNG_SHB:
                    # A new section: byte order may change, interfaces start over.
                    bom = struct.unpack_from("<I", buf, pos + 8)[0]
                    if bom == PCAPNG_BYTE_ORDER_MAGIC:
                        order = "<"
                    elif bom == 0x4D3C2B1A:
                        order = ">"
                    else:
                        skipped["corrupt-block"] += 1
                        return
                    unpack_u32 = struct.Struct(order + "I").unpack_from
                    block_header = struct.Struct(order + "II").unpack_from
                    epb_header = struct.Struct(order + "IIIII").unpack_from
                    blen = unpack_u32(buf, pos + 4)[0]
                    interfaces = []
                if blen < 12 or blen & 3 or blen > MAX_RECORD:
                    skipped["corrupt-block"] += 1
                    return
                end = pos + blen
                if end > end_buf:
                    break
                if btype == _EPB:
                    iface_id, ts_high, ts_low, caplen, _origlen = epb_header(buf, pos + 8)
                    if caplen > blen - 32 or iface_id >= len(interfaces):
                        skipped["malformed-block"] += 1
                    else:
                        iface = interfaces[iface_id]
                        last_ts = ((ts_high << 32) | ts_low) * iface.scale + iface.offset
                        yield last_ts, iface.linktype, buf[pos + 28 : pos + 28 + caplen]
                elif btype == _SPB:
                    # Simple packet block: interface 0, no timestamp (keep the last one seen).
                    if not interfaces:
                        skipped["malformed-block"] += 1
                    else:
                        origlen = unpack_u32(buf, pos + 8)[0]
                        caplen = min(origlen, blen - 16)
                        yield last_ts, interfaces[0].linktype, buf[pos + 12 : pos + 12 + caplen]
                elif btype == _IDB:
                    try:
                        interfaces.append(_parse_idb(buf[pos + 8 : end - 4], order))
                    except struct.error:
                        skipped["malformed-block"] += 1
                        interfaces.append(_Interface(-1, 1e-6, 0.0))
                elif btype == _OBSOLETE_PB:
                    iface_id = struct.unpack_from(order + "H", buf, pos + 8)[0]
                    ts_high, ts_low, caplen = struct.unpack_from(order + "III", buf, pos + 12)
                    if caplen > blen - 32 or iface_id >= len(interfaces):
                        skipped["malformed-block"] += 1
                    else:
                        iface = interfaces[iface_id]
                        last_ts = ((ts_high << 32) | ts_low) * iface.scale + iface.offset
                        yield last_ts, iface.linktype, buf[pos + 28 : pos + 28 + caplen]
                # Other blocks (name resolution, statistics, custom, ...) are not packets.
                pos = end
            want = READ_CHUNK
            if pos + 12 <= end_buf:
                blen = block_header(buf, pos)[1]
                if block_header(buf, pos)[0] == PCAPNG_SHB:
                    blen = 12  # byte order unknown until the BOM is read: just read on
                if blen > MAX_RECORD:
                    skipped["corrupt-block"] += 1
                    return
                want = max(READ_CHUNK, blen)
            chunk = _read(stream, want, skipped)
            if not chunk:
                if pos < end_buf:
                    skipped["truncated-file"] += 1
                return
            buf = buf[pos:] + chunk
            pos = 0
            capture.note_progress()
    finally:
        capture.close()
