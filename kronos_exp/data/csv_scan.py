"""Passes over a CSV's bytes in blocks, so they are never all held at once: the sha256 digest the
series record with the encoding check (before every read), and the count of fields on every line
(before a whole-file read, which names errors; the fast read refuses ragged rows by itself).

The checks raise one-line DataErrors naming the byte or line (the header is line 1): files that
are not UTF-8 text (UTF-16/32, binary, other encodings) and rows with more or fewer fields than
the header. Fields are counted with numpy (separators per line) when the file has no quote
character and only `\\n` or `\\r\\n` line ends; otherwise with `csv.reader`, which knows quoting.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

import numpy as np

from .config import DataError
from .columns import sniff_separator

BLOCK = 1 << 24  # bytes per block: 16 MiB


@dataclass
class Scan:
    """What the pass found: the digest of the bytes and the separator of the header line."""

    digest: str
    sep: str


@dataclass
class _Ragged:
    """Lines whose field count differs from the header's."""

    expected: int = 0
    lines: list[tuple[int, int]] = field(default_factory=list)  # (line, fields), the first few
    count: int = 0

    def add(self, line: int, fields: int) -> None:
        self.count += 1
        if len(self.lines) < 5:
            self.lines.append((line, fields))

    def check(self, file: str) -> None:
        """pandas fills a short row with NaN (which ffill then hides), drops the extra fields of a
        long one, and takes the first column as the index when every row is one field longer."""
        if not self.count:
            return
        line, n = self.lines[0]
        shown = ", ".join(str(l) for l, _ in self.lines) + (", ..." if self.count > 5 else "")
        which = "" if self.count == 1 else ", lines " + shown
        raise DataError(
            f"{file}: line {line} has {n} fields but the header has {self.expected} ({self.count} such "
            f"line(s){which}); every row needs one value per header column (leave missing values empty, not out)"
        )


def _bom_error(head: bytes, file: str) -> None:
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if head.startswith(bom):
            raise DataError(f"{file}: byte 0: a {name} byte-order mark; save the file as UTF-8")


class _Utf8Check:
    """Refuse NUL bytes and non-UTF-8 bytes, naming the byte position (0-based) and line (the
    line is counted from the file again, only when there is an error to report)."""

    def __init__(self, file: str, open_binary: Callable[[], BinaryIO]):
        self.file, self.open_binary = file, open_binary
        self.decoder, self.offset = codecs.getincrementaldecoder("utf-8")(), 0

    def _line(self, position: int) -> int:
        lines = 1
        with self.open_binary() as fh:
            while position > 0:
                block = fh.read(min(position, BLOCK))
                lines, position = lines + block.count(b"\n"), position - BLOCK
        return lines

    def feed(self, block: bytes) -> None:
        nul = block.find(b"\x00")
        if nul >= 0:
            raise DataError(
                f"{self.file}: byte {self.offset + nul} (line {self._line(self.offset + nul)}): a NUL byte; "
                "this is a binary or UTF-16 file, not CSV text: save it as UTF-8"
            )
        carried = self.decoder.getstate()[0]  # the start of a character split across blocks
        if carried or not block.isascii():
            try:
                self.decoder.decode(block)
            except UnicodeDecodeError as e:
                seen, at = carried + block, self.offset - len(carried) + e.start
                raise DataError(
                    f"{self.file}: byte {at} (line {self._line(at)}): 0x{seen[e.start]:02x} is not "
                    "UTF-8; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
        self.offset += len(block)

    def finish(self) -> None:
        carried = self.decoder.getstate()[0]
        if carried:
            at = self.offset - len(carried)
            raise DataError(
                f"{self.file}: byte {at} (line {self._line(at)}): 0x{carried[0]:02x} begins a "
                "character that the end of the file cuts off; save the file as UTF-8"
            )


class _FieldCount:
    """Separators per line with numpy; gives up (`plain` False) at a quote or a lone `\\r`."""

    def __init__(self, sep: str, ragged: _Ragged):
        self.sep, self.ragged = ord(sep), ragged
        self.plain, self.tail, self.line = True, b"", 0  # line: lines finished so far

    def feed(self, block: bytes) -> None:
        if not self.plain:
            return
        data = self.tail + block
        end = data.rfind(b"\n") + 1
        self.tail = data[end:]
        self._lines(data[:end])

    def finish(self) -> None:
        if self.plain and self.tail:
            self._lines(self.tail + b"\n")

    def _lines(self, data: bytes) -> None:
        if not data or not self.plain:
            return
        if b'"' in data or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n")):
            self.plain = False
            return
        a = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(a == 10)
        seps = np.flatnonzero(a == self.sep)
        fields = np.diff(np.searchsorted(seps, ends), prepend=0) + 1
        starts = np.r_[0, ends[:-1] + 1]
        if self.line == 0:  # the header line
            self.ragged.expected = int(fields[0])
        odd = np.flatnonzero(fields != self.ragged.expected)
        for i in odd:  # only the lines that fail: is the line blank (separators and spaces only)?
            text = data[starts[i]: ends[i]].decode("utf-8", "replace").replace(chr(self.sep), "")
            if text.strip() and not (self.line == 0 and i == 0):
                self.ragged.add(self.line + int(i) + 1, int(fields[i]))
        self.line += len(ends)


def _csv_fields(open_binary: Callable[[], BinaryIO], sep: str, file: str) -> _Ragged:
    """The field counts with csv.reader, for files with quotes or old Mac line ends."""
    ragged = _Ragged()
    with open_binary() as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            ragged.expected = len(next(reader))
            start = reader.line_num + 1
            for row in reader:
                if len(row) != ragged.expected and any(f.strip() for f in row):
                    ragged.add(start, len(row))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{file}: line {reader.line_num}: cannot split the line into fields ({e})") from None
    return ragged


def check_fields(open_binary: Callable[[], BinaryIO], sep: str, file: str, block: int = BLOCK) -> None:
    """Every non-blank row has as many fields as the header (one more pass over the file)."""
    ragged = _Ragged()
    fields = _FieldCount(sep, ragged)
    with open_binary() as fh:
        while data := fh.read(block):
            fields.feed(data)
    fields.finish()
    if not fields.plain:
        ragged = _csv_fields(open_binary, sep, file)
    ragged.check(file)


def scan_csv(open_binary: Callable[[], BinaryIO], file: str, block: int = BLOCK) -> Optional[Scan]:
    """Digest and encoding check of the CSV `open_binary()` reads; None when its first line is blank."""
    with open_binary() as fh:
        first = fh.read(block)
        _bom_error(first[:4], file)
        header = re.split(rb"\r\n|\r|\n", first, maxsplit=1)[0].decode("utf-8-sig", errors="replace")
        digest, utf8 = hashlib.sha256(), _Utf8Check(file, open_binary)
        data = first
        while data:
            digest.update(data)
            utf8.feed(data)
            data = fh.read(block)
        utf8.finish()
    if not header.strip():
        return None
    return Scan(digest=digest.hexdigest(), sep=sniff_separator(header))
