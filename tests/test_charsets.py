"""bridge.domain.charsets: bytes -> text, never silently wrong. A table of what real mail does."""

from __future__ import annotations

import pytest

from bridge.domain.charsets import decode

# ISO-2022-JP with NEC row 13 (①, as Outlook writes it): ESC $ B, 0x2D21, ESC ( B.
CIRCLED_ONE_JIS = b"\x1b$B-!\x1b(B"
JAPANESE = "今なら、先着100施設限定で無料バージョンを導入いただけます。"

CASES = [
    # (name, bytes, declared, hints, text, codec, defect says)
    ("declared and right", "Grüße".encode("utf-8"), "utf-8", (), "Grüße", "utf-8", None),
    ("ISO-8859-1 read as Windows-1252", b"\x93quoted\x94 \x80 5", "iso-8859-1", (), "\u201cquoted\u201d € 5",
     "cp1252", None),
    ("ks_c_5601 is cp949", "한국어 메일".encode("cp949"), "ks_c_5601-1987", (), "한국어 메일", "cp949", None),
    ("GB2312 label, GBK bytes", "镕".encode("gbk"), "gb2312", (), "镕", "gb18030", None),
    ("ISO-2022-JP with NEC extensions", CIRCLED_ONE_JIS + "都".encode("iso2022_jp"), "iso-2022-jp", (),
     "①都", "cp50221", "read as cp50221 (its superset)"),
    ("ISO-2022-JP label, Shift_JIS bytes", JAPANESE.encode("shift_jis"), "iso-2022-jp", (), JAPANESE, "cp932",
     "text is not valid iso-2022-jp"),
    ("nothing declared, UTF-8", "Grüße".encode("utf-8"), None, (), "Grüße", "utf-8", "read as utf-8"),
    ("nothing declared, the message's other part says GB2312", "机房环境法规".encode("gbk"), None, ("gb2312",),
     "机房环境法规", "gb18030", "declared elsewhere in the message"),
    ("raw Shift_JIS header, the body declares ISO-2022-JP", "ツール".encode("shift_jis"), None, ("iso-2022-jp",),
     "ツール", "cp932", "declared elsewhere in the message"),
    ("declared UTF-8, a stray Latin-1 byte", b"Gr\xfc\xdfe, caf\xc3\xa9", "utf-8", (), "Grüße, café",
     "utf-8+cp1252", "declared UTF-8"),
    ("undeclared, UTF-8 with stray Windows-1252 bytes", "äöü 差出人 - ".encode() + b"\xe4\xf6\xfc", "iso-gb2312", (),
     "äöü 差出人 - äöü", "utf-8+cp1252", "unknown charset 'iso-gb2312'"),
    ("undeclared Russian, detected", "Здравствуйте, заказ отправлен сегодня утром.".encode("cp1251"), None, (),
     "Здравствуйте, заказ отправлен сегодня утром.", "cp1251", "(detected)"),
    ("not a text encoding is an unknown charset", b"uryyb", "rot13", (), "uryyb", "utf-8", "unknown charset 'rot13'"),
    ("too few bytes to guess: Windows-1252 last", "Grüße".encode("cp1252"), None, (), "Grüße", "cp1252",
     "its superset"),
]


@pytest.mark.parametrize(("name", "data", "declared", "hints", "text", "codec", "says"), CASES,
                         ids=[c[0] for c in CASES])
def test_decode(name: str, data: bytes, declared: str | None, hints: tuple[str, ...], text: str, codec: str,
                says: str | None) -> None:
    decoded = decode(data, declared, hints)
    assert (decoded.text, decoded.codec) == (text, codec)
    if says is None:
        assert decoded.defect is None
    else:
        assert decoded.defect is not None and says in decoded.defect


def test_what_cannot_be_read_is_marked_not_hidden() -> None:
    decoded = decode(b"\xff\xfe\xfd\xfc", "utf-8")
    assert decoded.defect is not None and "read as" in decoded.defect
