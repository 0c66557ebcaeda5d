"""Bytes of a mail part or header -> text, never silently wrong (pure).

Real mail lies about its charset: Japanese mail declared ISO-2022-JP carries
Microsoft's extensions (NEC row 13: ①, ㈱...), GB2312 mail carries GBK
characters, Korean mail is declared ``ks_c_5601-1987`` and is cp949, Latin-1
mail is Windows-1252, some mail declares nothing and is GBK or Shift_JIS, and
raw 8-bit headers carry no label at all. :func:`decode` tries, in order:

1. the declared charset;
2. its supersets (what the sender's software really wrote): ISO-2022-JP ->
   its extended forms -> Microsoft's cp50221 form; GB2312 -> GBK -> GB18030;
   EUC-KR -> cp949; Shift_JIS -> cp932; Big5 -> Big5-HKSCS -> cp950;
3. UTF-8; then UTF-8 with a few Windows-1252 bytes mixed in, when the UTF-8
   sequences clearly outnumber the stray bytes;
4. the charsets the message declares elsewhere (its other parts, its encoded
   headers): a raw 8-bit Subject of a GB2312 mail is GB2312;
5. a detector (charset-normalizer, a well-kept library) for the rest;
6. for ASCII (or nothing) declared: Windows-1252, which takes almost any byte
   and so comes last (ISO-8859-1 is always read as Windows-1252, as mail
   clients and HTML5 do);
7. last, UTF-8 with replacement characters.

Every step after the first adds a defect naming what was done, so a message
read with a guess says so (``ParsedMail.defects``) and staff can be told.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import NamedTuple

# Labels real mail uses that Python's codec registry does not know, or knows as
# something narrower than what the senders wrote.
# (The WHATWG Encoding Standard's mappings, where it has one.)
ALIASES = {
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8", "unicode-1-1-utf-8": "utf-8", "x-user-defined": "latin-1",
    "windows-874": "cp874", "x-sjis": "shift_jis", "shift-jis": "shift_jis", "x-mac-roman": "mac_roman",
    "utf8": "utf-8", "ansi_x3.4-1968": "us-ascii",
    "x-euc-jp": "euc_jp", "cp-850": "cp850",
    # What every mail client (and HTML5) does: ISO-8859-1 is read as its superset Windows-1252.
    "iso-8859-1": "cp1252", "iso_8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
}

# Codec (Python's canonical name) -> the supersets its senders really use, in order.
SUPERSETS: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004", "cp50221"),
    "iso2022_jp_2": ("iso2022_jp_2004", "cp50221"),
    "euc_kr": ("cp949",),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "euc_jp": ("euc_jis_2004", "cp932"),
    "big5": ("big5hkscs", "cp950"),
    "ascii": ("cp1252",),
    "cp1252": ("latin_1",),
    "tis_620": ("cp874",),
    "iso8859_11": ("cp874",),
}
# 7-bit charsets -> the 8-bit encodings of the same language their senders fall back
# to in raw headers and mislabelled parts (a Japanese mailer that writes ISO-2022-JP
# in its bodies writes Shift_JIS bytes into a Subject). Tried after UTF-8.
RELATIVES: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("cp932", "euc_jp"), "iso2022_jp_2": ("cp932", "euc_jp"), "iso2022_jp_ext": ("cp932", "euc_jp"),
    "hz": ("gb18030",), "iso2022_kr": ("cp949",),
}
_DETECT_MIN = 8            # fewer 8-bit bytes than this tell a detector nothing
_DETECT_SAMPLE = 64 * 1024  # the detector's time grows with its input


def codec_name(label: str | None) -> str | None:
    """Python's codec for a MIME charset label (aliases applied), None when unknown."""
    label = _label(label)
    if not label:
        return None
    label = ALIASES.get(label, label)
    if label == "cp50221":
        return label
    try:
        name = codecs.lookup(label).name
        b"x".decode(name, "ignore")      # LookupError for codecs that are not text encodings (rot13, zlib)
    except (LookupError, ValueError):   # ValueError: a NUL in the label
        return None
    return name


class Decoded(NamedTuple):
    text: str
    codec: str             # what the bytes were read as ("utf-8+cp1252": UTF-8 with stray Windows-1252 bytes)
    defect: str | None     # what was guessed; None when the declared charset was right


def decode(data: bytes, declared: str | None, hints: Iterable[str] = ()) -> Decoded:
    """``data`` as text, and how it was read."""
    label = _label(declared)
    codec = codec_name(label or "us-ascii")
    if codec is not None:
        text = _try(data, codec)
        if text is not None:
            return Decoded(text, codec, None)
    problem = (f"text is not valid {label}" if codec and label else f"unknown charset {label!r}" if label
               else "no charset declared and not ASCII")
    single_byte = codec in _SINGLE_BYTE_LABELS
    hinted = [c for c in dict.fromkeys(filter(None, map(codec_name, hints))) if c != codec]
    hinted = list(dict.fromkeys([*hinted, *RELATIVES.get(codec or "", ()),
                                 *(r for c in hinted for r in RELATIVES.get(c, ()))]))
    supersets = [(c, "its superset") for c in SUPERSETS.get(codec or "", ())]
    # Single-byte charsets take almost any bytes: they come after everything that can say no.
    candidates = [
        *([] if single_byte else supersets), ("utf-8", ""),
        *[(c, "declared elsewhere in the message") for c in hinted if c not in _SINGLE_BYTE_CODECS],
        ("utf-8+cp1252", "declared UTF-8" if codec == "utf-8" else "mostly UTF-8"),
        ("", "detected"),
        *[(c, "declared elsewhere in the message") for c in hinted if c in _SINGLE_BYTE_CODECS],
        *(supersets if single_byte else []),
    ]
    tried = {codec}
    for candidate, why in candidates:
        if candidate in tried:
            continue
        tried.add(candidate)
        text = (_mostly_utf8(data, majority=codec != "utf-8") if candidate == "utf-8+cp1252"
                else _try(data, candidate) if candidate else None)
        if not candidate:
            candidate, text = _detect(data)
        if text is not None:
            return Decoded(text, candidate, f"{problem}; read as {candidate}" + (f" ({why})" if why else ""))
    return Decoded(data.decode("utf-8", "replace"), "utf-8",
                   f"{problem}; read as utf-8 with replacement characters")


def _detect(data: bytes) -> tuple[str, str | None]:
    """charset-normalizer's best guess, judged on the lines that carry 8-bit bytes.

    ASCII lines say nothing about the charset; in a long message with one line
    of Chinese they drown the evidence, and a single-byte charset "fits" as
    well as the right one."""
    sample = b"\n".join(line for line in data.splitlines() if not line.isascii())[:_DETECT_SAMPLE]
    if len(sample) < _DETECT_MIN:
        return "", None
    # Imported here: only mislabelled mail needs it, and importing it costs about 0.1 s of start-up.
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        return "", None
    text = _try(data, best.encoding)
    return best.encoding, text


# Labels whose supersets accept almost any byte: tried only after UTF-8, the
# message's other charsets and the detector, or every UTF-8 or GBK text would
# come out as Windows-1252.
_SINGLE_BYTE_LABELS = frozenset({"ascii", "cp1252"})
_SINGLE_BYTE_CODECS = frozenset({"ascii", "cp1252", "latin_1", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257",
                                 "cp874", "koi8_r", "koi8_u", "mac_roman"} | {f"iso8859_{n}" for n in range(1, 17)})


def _label(label: str | None) -> str:
    return (label or "").strip().strip('"').lower()[:40]


def _try(data: bytes, codec: str) -> str | None:
    if codec == "cp50221":
        return _iso2022jp_microsoft(data)
    if codec == "utf-8+cp1252":
        return _mostly_utf8(data, majority=True)
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError):
        return None


def _cp1252_bytes(error: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: the bytes that are not UTF-8, read as Windows-1252."""
    assert isinstance(error, UnicodeDecodeError)
    bad = error.object[error.start:error.end]
    return bad.decode("cp1252", "replace").replace("\ufffd", "") or bad.decode("latin-1"), error.end


codecs.register_error("mailbridge-cp1252", _cp1252_bytes)


def _mostly_utf8(data: bytes, majority: bool) -> str | None:
    """UTF-8 with a few Windows-1252 bytes mixed in (text pasted from two sources, a
    signature from another program): each part read as what it is. ``majority``: only
    when the valid multi-byte UTF-8 sequences outnumber the bytes that are not UTF-8
    (not needed when the sender declared UTF-8)."""
    strict = data.decode("utf-8", "replace")
    invalid = strict.count("\ufffd")
    valid = sum(1 for ch in strict if ord(ch) > 0x7F) - invalid
    if not invalid or (majority and valid <= invalid):
        return None
    return data.decode("utf-8", "mailbridge-cp1252")


# ISO-2022-JP escape sequences -> what follows them.
_ESCAPES = {b"\x1b(B": "ascii", b"\x1b(J": "ascii", b"\x1b$@": "jis", b"\x1b$B": "jis", b"\x1b(I": "kana",
            b"\x1b$(D": "jis"}


def _iso2022jp_microsoft(data: bytes) -> str | None:
    """ISO-2022-JP as Microsoft writes it (its code page 50221), which Python has no codec for.

    Outlook and most Japanese webmail put characters of the NEC and IBM
    extension rows (①, ㈱, №...) into JIS X 0208 sequences; the standard
    codecs reject them. Each double-byte JIS character is moved to its
    Shift_JIS position and read as cp932, which holds those rows.
    """
    out: list[str] = []
    mode = "ascii"
    i = 0
    n = len(data)
    while i < n:
        if data[i] == 0x1B:
            for escape, target in _ESCAPES.items():
                if data.startswith(escape, i):
                    mode, i = target, i + len(escape)
                    break
            else:
                return None
            continue
        byte = data[i]
        if byte in (0x0A, 0x0D):
            out.append(chr(byte))
            i += 1
            continue
        if mode == "ascii":
            if byte > 0x7F:
                return None
            out.append(chr(byte))
            i += 1
        elif mode == "kana":
            if not 0x21 <= byte <= 0x5F:
                return None
            out.append(bytes([byte + 0x80]).decode("cp932"))
            i += 1
        else:
            if i + 1 >= n:
                return None
            j1, j2 = byte, data[i + 1]
            if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
                return None
            s1 = ((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)
            s2 = j2 + (0x1F + (j2 >= 0x60) if j1 & 1 else 0x7E)
            try:
                out.append(bytes([s1, s2]).decode("cp932"))
            except UnicodeDecodeError:
                return None
            i += 2
    return "".join(out)
