"""SIP URIs, host:port, parameters and name-addr values."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.uri import (
    NameAddr,
    SipUri,
    format_params,
    parse_decimal,
    split_host_port,
    split_params,
    split_quoted,
)


@pytest.mark.parametrize(
    ("text", "scheme", "user", "host", "port", "params", "headers"),
    [
        ("sip:alice@example.com", "sip", "alice", "example.com", None, {}, None),
        ("SIPS:bob@192.0.2.1:5061", "sips", "bob", "192.0.2.1", 5061, {}, None),
        ("sip:192.0.2.1;transport=TCP;lr", "sip", None, "192.0.2.1", None,
         {"transport": "TCP", "lr": None}, None),
        ("sip:srs@[2001:db8::1]:5060;transport=tls", "sip", "srs", "2001:db8::1", 5060,
         {"transport": "tls"}, None),
        ("sip:[::1]", "sip", None, "::1", None, {}, None),
        ("sip:user:secret@host", "sip", "user", "host", None, {}, None),
        ("sip:+14155550100@as.example.com;user=phone", "sip", "+14155550100",
         "as.example.com", None, {"user": "phone"}, None),
        ("sip:a@b?subject=hi&priority=urgent", "sip", "a", "b", None, {},
         "subject=hi&priority=urgent"),
        ("alice@example.com", "sip", "alice", "example.com", None, {}, None),
        ("sip:src@192.0.2.10:5060;transport=udp;+sip.src", "sip", "src", "192.0.2.10", 5060,
         {"transport": "udp", "+sip.src": None}, None),
        ("  sip:padded@host  ", "sip", "padded", "host", None, {}, None),
    ],
)  # fmt: skip
def test_parse_sip_uris(
    text: str,
    scheme: str,
    user: str | None,
    host: str,
    port: int | None,
    params: dict[str, str | None],
    headers: str | None,
) -> None:
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.host, uri.port, uri.params, uri.headers) == (
        scheme,
        user,
        host,
        port,
        params,
        headers,
    )
    assert SipUri.parse(str(uri)) == uri


def test_other_schemes_are_kept_opaque() -> None:
    tel = SipUri.parse("tel:+1-415-555-0100;phone-context=example.com")
    assert (tel.scheme, tel.user, tel.host) == (
        "tel",
        None,
        "+1-415-555-0100;phone-context=example.com",
    )
    assert str(tel) == "tel:+1-415-555-0100;phone-context=example.com"
    assert SipUri.parse("urn:service:sos").host == "service:sos"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "sip:",
        "sip:user@",
        "sip:host:port",
        "sip:host:65536",
        "sip:host:-1",
        "sip:host:\u00b2",
        "sip:host:" + "9" * 5000,
        "sip:[2001:db8::1",
        "sip:[2001:db8::1]x",
        "sip:[]:5060",
    ],
)
def test_bad_sip_uris(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse(text)
    assert info.value.status == 400
    assert len(info.value.reason) < 120


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", ("host", None)),
        ("host:0", ("host", 0)),
        ("host:65535", ("host", 65535)),
        (" 192.0.2.1:5060 ", ("192.0.2.1", 5060)),
        ("host:", ("host", None)),  # an empty port is tolerated
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("[2001:db8::1]:5070", ("2001:db8::1", 5070)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected


def test_parse_decimal_accepts_only_bounded_ascii_digits() -> None:
    assert parse_decimal("0042", max_digits=4) == 42
    for text in ("", "42a", "-1", "+1", " 1", "1_0", "\u00b2", "\u0661", "12345"):
        assert parse_decimal(text, max_digits=4) is None
    assert parse_decimal("9" * 5000, max_digits=10) is None


def test_split_params_and_format_params() -> None:
    params = split_params(';Transport=TCP; lr ;method="NOTIFY;Event=x";q=0.5;;=orphan;empty=')
    assert params == {"transport": "TCP", "lr": None, "method": "NOTIFY;Event=x", "q": "0.5",
                      "empty": ""}  # fmt: skip
    assert format_params(params) == ';transport=TCP;lr;method="NOTIFY;Event=x";q=0.5;empty=""'
    assert split_params(format_params(params)) == params
    escaped = {"text": 'say "hi"', "path": "a\\b", "space": "a b"}
    assert format_params(escaped) == ';text="say \\"hi\\"";path="a\\\\b";space="a b"'
    assert split_params(format_params(escaped)) == escaped


def test_split_quoted_ignores_separators_in_quotes_and_brackets() -> None:
    text = '"A, \\"B\\"" <sip:a@h;x=1,2>;p=1, <sip:b@h>, sip:c@h'
    assert split_quoted(text, ",") == [
        '"A, \\"B\\"" <sip:a@h;x=1,2>;p=1',
        " <sip:b@h>",
        " sip:c@h",
    ]
    assert split_quoted("a;b", ",") == ["a;b"]
    # the shortcuts: nothing quoted or bracketed, or brackets without the separator
    assert split_quoted("SIP/2.0/UDP h;branch=z9;rport", ";") == [
        "SIP/2.0/UDP h",
        "branch=z9",
        "rport",
    ]
    assert split_quoted("<sip:a@h;x=1>", ",") == ["<sip:a@h;x=1>"]
    assert split_quoted("<sip:a@h;x=1>;tag=9", ";") == ["<sip:a@h;x=1>", "tag=9"]
    assert split_quoted("a > b;c", ";") == ["a > b", "c"]


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ('"Alice" <sip:alice@h>;tag=1', "Alice", "sip:alice@h", {"tag": "1"}),
        ("Bob Smith <sip:bob@h>", "Bob Smith", "sip:bob@h", {}),
        ("<sip:c@h;transport=tcp>;expires=60", None, "sip:c@h;transport=tcp", {"expires": "60"}),
        ("sip:d@h;tag=x", None, "sip:d@h", {"tag": "x"}),
        ('"Say \\"hi\\", ok; bye" <sip:e@h>;tag=2', 'Say "hi", ok; bye', "sip:e@h", {"tag": "2"}),
        ('"back\\\\slash" <sip:f@h>', "back\\slash", "sip:f@h", {}),
        ('"<not a uri>" <sip:g@h>', "<not a uri>", "sip:g@h", {}),
        ("<sip:h@h;+sip.src", None, "sip:h@h;+sip.src", {}),
        ("<sip:i@[2001:db8::9]:5062>", None, "sip:i@[2001:db8::9]:5062", {}),
        ("*", None, "*", {}),
        ('"" <sip:j@h>', "", "sip:j@h", {}),
    ],
)
def test_parse_name_addr(
    text: str, display: str | None, uri: str, params: dict[str, str | None]
) -> None:
    value = NameAddr.parse(text)
    assert (value.display, value.uri, value.params) == (display, uri, params)
    assert NameAddr.parse(str(value)) == value


@pytest.mark.parametrize("text", ["", "  ", "<>", '"Name only" <>', ";tag=1"])
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


def test_tag_and_with_param() -> None:
    to = NameAddr.parse("<sip:srs@h>")
    assert to.tag is None
    tagged = to.with_param("tag", "abc")
    assert tagged.tag == "abc" and to.tag is None
    assert str(tagged) == "<sip:srs@h>;tag=abc"


TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
param_names = st.text(string.ascii_lowercase + string.digits + "-.!%*_+`'~", min_size=1, max_size=8)
# Header text, biased towards the characters that quoting and splitting are about.
header_chars = st.one_of(
    st.sampled_from('"\\;,<>=: \t@?'),
    st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
)
param_values = st.one_of(
    st.none(), st.text(header_chars, max_size=12).map(lambda v: v.strip(" \t"))
)
hosts = st.one_of(
    st.lists(st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6), min_size=1,
             max_size=3).map(".".join),
    st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
        lambda g: ":".join(f"{x:x}" for x in g)
    ),
)  # fmt: skip
sip_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), st.text(TOKEN, min_size=1, max_size=8)),
    host=hosts,
    port=st.one_of(st.none(), st.integers(0, 65535)),
    params=st.dictionaries(
        param_names, st.one_of(st.none(), st.text(TOKEN, max_size=6)), max_size=3
    ),
)
name_addrs = st.builds(
    NameAddr,
    uri=sip_uris.map(str),
    display=st.one_of(st.none(), st.text(header_chars, max_size=20)),
    params=st.dictionaries(param_names, param_values, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(sip_uris)
def test_sip_uri_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@settings(max_examples=200, deadline=None)
@given(name_addrs)
def test_name_addr_round_trip(value: NameAddr) -> None:
    assert NameAddr.parse(str(value)) == value
    assert NameAddr.parse(f" \t{value} ") == value


TRICKY = st.sampled_from(list('sip:@[]<>;,"\\=?. \t0123456789abz\u00b2\u0661\x85\xa0-'))
texts = st.one_of(st.text(max_size=80), st.lists(TRICKY, max_size=60).map("".join))


@settings(max_examples=500, deadline=None)
@given(texts)
def test_parsers_raise_only_parse_errors(text: str) -> None:
    for parse in (SipUri.parse, NameAddr.parse, split_host_port):
        try:
            value = parse(text)
        except SipParseError as exc:
            assert exc.status == 400
        else:
            str(value)  # rendering what was parsed never fails either
    split_params(text)
    split_quoted(text, ",")
