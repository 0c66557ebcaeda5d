"""bridge.domain.threads: relay addresses, conversation keys, thread subjects."""

from __future__ import annotations

import random
import string

import pytest

from bridge.domain.marketplaces import ALL_RELAY_DOMAINS, AMAZON_TLDS
from bridge.domain.threads import (
    conversation_key,
    relay_family,
    split_relay_address,
    thread_subject,
)

RELAYS = ALL_RELAY_DOMAINS


@pytest.mark.parametrize(("addr", "expected"), [
    # Amazon: 8-32 lowercase letters/digits, optional +case
    ("abc12345@marketplace.amazon.com", ("abc12345@marketplace.amazon.com", None)),
    ("k7m2x9q4t1v8w3z5@marketplace.amazon.co.uk", ("k7m2x9q4t1v8w3z5@marketplace.amazon.co.uk", None)),
    ("K7M2X9Q4T1V8W3Z5@Marketplace.Amazon.DE", ("k7m2x9q4t1v8w3z5@marketplace.amazon.de", None)),
    ("  abc12345@marketplace.amazon.com  ", ("abc12345@marketplace.amazon.com", None)),
    ("abc12345+CASE-7788991@marketplace.amazon.com", ("abc12345@marketplace.amazon.com", "case-7788991")),
    ("abc12345+1a2b3c@marketplace.amazon.co.jp", ("abc12345@marketplace.amazon.co.jp", "1a2b3c")),
    ("abc12345+@marketplace.amazon.com", ("abc12345@marketplace.amazon.com", None)),
    ("a" * 32 + "@marketplace.amazon.com", ("a" * 32 + "@marketplace.amazon.com", None)),
    ("a" * 33 + "@marketplace.amazon.com", None),
    ("abc1234@marketplace.amazon.com", None),          # 7 characters
    ("abc.12345@marketplace.amazon.com", None),
    ("abc_12345@marketplace.amazon.com", None),
    ("abc12345+bad case@marketplace.amazon.com", None),
    ("abc12345+x+y@marketplace.amazon.com", None),
    ("+case1234@marketplace.amazon.com", None),
    # exact domain only
    ("abc12345@marketplace.amazon.com.evil.example", None),
    ("abc12345@evil-marketplace.amazon.com", None),
    ("abc12345@sub.marketplace.amazon.com", None),
    ("abc12345@marketplace.amazon.com.", None),
    ("abc12345@marketplace.amazon.zz", None),
    ("abc12345@amazon.com", None),
    ("abc12345@marketplace-amazon.com", None),
    ("abc12345@marketplace.amazon.com@evil.example", None),
    ("abc12345", None),
    ("", None),
    ("@marketplace.amazon.com", None),
    # Walmart: 32 hex digits
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com",
     ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com", None)),
    ("0F1E2D3C4B5A69788796A5B4C3D2E1F0@Relay.Walmart.com",
     ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com", None)),
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f@relay.walmart.com", None),   # 31
    ("zf1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com", None),  # not hex
    ("0f1e2d3c4b5a69788796a5b4c3d2e1f0@relay.walmart.com.evil.example", None),
    # eBay members
    ("gardenfan_2010.ab12cd@members.ebay.com", ("gardenfan_2010.ab12cd@members.ebay.com", None)),
    ("m2kwmr9b4@members.ebay.com", ("m2kwmr9b4@members.ebay.com", None)),
    (".leadingdot@members.ebay.com", None),
    ("trailingdot.@members.ebay.com", None),
    ('"quoted"@members.ebay.com', None),
    ("spa ce@members.ebay.com", None),
    ("x@evil-members.ebay.com", None),
])
def test_split_relay_address(addr: str, expected: tuple[str, str | None] | None) -> None:
    assert split_relay_address(addr, RELAYS) == expected


def test_every_amazon_tld_is_a_relay() -> None:
    for tld in AMAZON_TLDS:
        assert split_relay_address(f"abcd1234@marketplace.amazon.{tld}", RELAYS) == (
            f"abcd1234@marketplace.amazon.{tld}", None)


def test_only_the_given_domains_count() -> None:
    only_de = frozenset({"marketplace.amazon.de"})
    assert split_relay_address("abcd1234@marketplace.amazon.de", only_de) is not None
    assert split_relay_address("abcd1234@marketplace.amazon.com", only_de) is None
    custom = frozenset({"relay.example"})
    assert split_relay_address("Some.Body-1@relay.example", custom) == ("some.body-1@relay.example", None)


def test_split_is_idempotent_on_random_aliases() -> None:
    rng = random.Random(5)
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(300):
        base = "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 32)))
        domain = rng.choice(sorted(d for d in RELAYS if d.startswith("marketplace.amazon.")))
        suffix = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        addr = f"{base}+{suffix}@{domain}"
        mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in addr)
        alias, case = split_relay_address(mixed, RELAYS) or ("", None)
        assert (alias, case) == (f"{base}@{domain}", suffix)
        assert split_relay_address(alias, RELAYS) == (alias, None)


@pytest.mark.parametrize(("domain", "family"), [
    ("marketplace.amazon.com", "amazon"), ("marketplace.amazon.co.jp", "amazon"),
    ("relay.walmart.com", "walmart"), ("members.ebay.com", "ebay"), ("relay.example", "other"),
])
def test_relay_family(domain: str, family: str) -> None:
    assert relay_family(domain) == family


@pytest.mark.parametrize(("alias", "order_id", "key"), [
    ("abc12345@marketplace.amazon.com", "111-2223334-4445556", "abc12345@marketplace.amazon.com#111-2223334-4445556"),
    ("abc12345@marketplace.amazon.com", None, "abc12345@marketplace.amazon.com#-"),
    ("abc12345@marketplace.amazon.com", "", "abc12345@marketplace.amazon.com#-"),
    ("ABC12345@Marketplace.Amazon.com", "d01-1234567-7654321", "abc12345@marketplace.amazon.com#D01-1234567-7654321"),
    (" abc12345@marketplace.amazon.com ", " 111-2223334-4445556 ", "abc12345@marketplace.amazon.com#111-2223334-4445556"),
])
def test_conversation_key(alias: str, order_id: str | None, key: str) -> None:
    assert conversation_key(alias, order_id) == key


def test_conversation_key_splits_by_order_and_buyer() -> None:
    keys = {conversation_key(a, o) for a in ("aaaa1111@marketplace.amazon.com", "bbbb2222@marketplace.amazon.com")
            for o in ("111-2223334-4445556", "111-2223334-4445557", None)}
    assert len(keys) == 6


@pytest.mark.parametrize(("subject", "stripped"), [
    ("Re: Order information", "Order information"),
    ("RE: re: Re[2]: Order information", "Order information"),
    ("AW: WG: Bestellung", "Bestellung"),
    ("Fwd: FW: TR: RV: R: Pedido", "Pedido"),
    ("Re： 注文について", "注文について"),
    ("Re: [MB-123] Inquiry from Amazon customer Jane (Order: 111-2223334-4445556)",
     "Inquiry from Amazon customer Jane (Order: 111-2223334-4445556)"),
    ("[MB-7] Re: question", "question"),
    ("Question [MB-7] about a widget", "Question about a widget"),
    ("  Re:   spaced    out  ", "spaced out"),
    ("Return policy inquiry", "Return policy inquiry"),
    ("Track: my parcel", "Track: my parcel"),
    ("Rev: not a prefix", "Rev: not a prefix"),
    ("[MB-abc] not our tag", "[MB-abc] not our tag"),
    ("", ""),
])
def test_thread_subject(subject: str, stripped: str) -> None:
    assert thread_subject(subject) == stripped


def test_thread_subject_is_idempotent() -> None:
    for subject in ("Re: AW: [MB-1] x", "Fwd: Re: y", "plain"):
        once = thread_subject(subject)
        assert thread_subject(once) == once
