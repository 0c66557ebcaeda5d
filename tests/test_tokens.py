"""Reply tokens and origin headers: table tests."""

import pytest

from bridge.domain import tokens

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


@pytest.mark.parametrize("conv_id", [1, 2, 35, 36, 1295, 10**6, 2**40])
def test_round_trip(conv_id: int) -> None:
    token = tokens.make_reply_token(KEY, "acme-us", conv_id)
    assert tokens.verify_reply_token(KEY, "acme-us", token) == conv_id
    assert len(f"seller+{token}") <= 64  # RFC 5321 local-part limit


def _flip(token: str, index: int) -> str:
    c = token[index]
    return token[:index] + ("b" if c != "b" else "c") + token[index + 1:]


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda t: t, 7),
        (lambda t: t.upper(), 7),                       # mail servers may change case
        (lambda t: f"  {t} ", 7),
        (lambda t: _flip(t, -1), None),                 # tampered MAC
        (lambda t: _flip(t, 0), None),                  # other conversation id, same MAC
        (lambda t: "8" + t[1:], None),
        (lambda t: t[:-1], None),                       # truncated
        (lambda t: t + "a", None),
        (lambda t: t.replace("-", "."), None),
        (lambda t: "", None),
        (lambda t: "-", None),
        (lambda t: "7-" + "a" * 10, None),
        (lambda t: "zzzzzzzzzzzzz-aaaaaaaaaa", None),   # id too long
    ],
)
def test_verify_table(make, expected) -> None:  # type: ignore[no-untyped-def]
    token = tokens.make_reply_token(KEY, "acme-us", 7)
    assert tokens.verify_reply_token(KEY, "acme-us", make(token)) == expected


def test_token_is_bound_to_account_and_key() -> None:
    token = tokens.make_reply_token(KEY, "acme-us", 7)
    assert tokens.verify_reply_token(KEY, "acme-de", token) is None
    assert tokens.verify_reply_token(OTHER_KEY, "acme-us", token) is None


def test_reply_address() -> None:
    assert tokens.reply_address("seller+{token}@acme.example", "7-abc") == "seller+7-abc@acme.example"


@pytest.mark.parametrize(
    "header,message_id,expected",
    [
        (None, "m1@acme.example", True),
        ("acme-us; 0000000000000000", "m1@acme.example", False),
        ("", "m1@acme.example", False),
        (None, "m2@acme.example", False),               # header copied onto another message
        (None, None, False),
        ("garbage", "m1@acme.example", False),
        ("acme-us; éé", "m1@acme.example", False),      # non-ASCII never raises
        ("acme-us; \udcff", "m1@acme.example", False),
    ],
)
def test_origin_table(header, message_id, expected) -> None:  # type: ignore[no-untyped-def]
    made = tokens.make_origin(KEY, "acme-us", "m1@acme.example")
    assert tokens.verify_origin(KEY, made if header is None else header, message_id, "acme-us") is expected


def test_origin_is_bound_to_the_account() -> None:
    made = tokens.make_origin(KEY, "acme-us", "m1@acme.example")
    assert not tokens.verify_origin(KEY, made, "m1@acme.example", "acme-de")


def test_tokens_made_by_earlier_versions_still_verify() -> None:
    # Pinned values: tokens already sit in staff mailboxes' Reply-To; their format must never drift.
    assert tokens.make_reply_token(b"secret-key", "acme", 42) == "16-l7yhhk3s37"
    assert tokens.verify_reply_token(b"secret-key", "acme", "16-l7yhhk3s37") == 42
    assert tokens.make_origin(b"secret-key", "acme", "mb.1@acme.example") == "acme; 4w4bzfizhs62zxch"
