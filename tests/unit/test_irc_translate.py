"""IRC <-> XMPP value mappings: MUC roles, Biboumi-compatible JID localparts, text."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.formatting import from_xep0393, to_xep0393
from legacy_plugins.irc.events import Channel, ISupport, Nick, Prefix
from legacy_plugins.irc.formatting import parse_mirc, render_mirc
from legacy_plugins.irc.translate import (
    ME,
    Address,
    AddressError,
    AddressMapping,
    ChannelAddress,
    OutgoingText,
    ServerAddress,
    UserAddress,
    correction_text,
    escape_localpart,
    irc_to_xmpp,
    irc_username,
    mask_matches,
    muc_role_affiliation,
    nick_problem,
    notice_text,
    unescape_localpart,
    xmpp_to_irc,
)


@pytest.mark.parametrize(
    ("prefixes", "expected"),
    [
        ("~", ("moderator", "owner")),
        ("q", ("moderator", "owner")),
        ("&", ("moderator", "admin")),
        ("a", ("moderator", "admin")),
        ("@", ("moderator", "admin")),
        ("o", ("moderator", "admin")),
        ("%", ("moderator", "member")),
        ("h", ("moderator", "member")),
        ("+", ("participant", "member")),
        ("v", ("participant", "member")),
        ("", ("participant", "none")),
        ("@+", ("moderator", "admin")),
        ("+@", ("moderator", "admin")),
        ("~@%+", ("moderator", "owner")),
        ("?", ("participant", "none")),
    ],
)
def test_muc_role_affiliation(prefixes: str, expected: tuple[str, str]) -> None:
    assert muc_role_affiliation(prefixes) == expected


def test_muc_role_affiliation_uses_the_server_prefix_symbols() -> None:
    isupport = ISupport().updated(["PREFIX=(Yov)!@+"])
    assert muc_role_affiliation("!", isupport) == ("participant", "none")  # Y: unknown mode
    assert muc_role_affiliation("!@", isupport) == ("moderator", "admin")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("space cadet", "space\\20cadet"),
        ('call me "ishmael"', "call\\20me\\20\\22ishmael\\22"),
        ("at&t guy", "at\\26t\\20guy"),
        ("d'artagnan", "d\\27artagnan"),
        ("/.fanboy", "\\2f.fanboy"),
        ("::foo::", "\\3a\\3afoo\\3a\\3a"),
        ("<foo>", "\\3cfoo\\3e"),
        ("user@host", "user\\40host"),
        ("c:\\net", "c\\3a\\net"),
        ("c:\\\\net", "c\\3a\\\\net"),
        ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
        ("c:\\5commas", "c\\3a\\5c5commas"),
        ("&local%irc.example", "\\26local%irc.example"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_xep0106(raw: str, escaped: str) -> None:
    assert escape_localpart(raw) == escaped
    assert unescape_localpart(escaped) == raw


@given(st.text())
def test_xep0106_round_trips(text: str) -> None:
    assert unescape_localpart(escape_localpart(text)) == text


@given(st.text(alphabet=st.sampled_from(" \"&'/:<>@\\%#ab02c5") | st.characters()))
def test_xep0106_text_without_escapes_is_its_own_escape(text: str) -> None:
    """The shortcut for text with nothing to escape gives what the full pass gives."""
    from legacy_plugins.irc import translate

    full = "".join(
        "\\5c"
        if char == "\\" and translate._SEQUENCE_RE.match(text, i)
        else translate._ESCAPES.get(char, char)
        for i, char in enumerate(text)
    )
    assert escape_localpart(text) == full


OPEN = AddressMapping()
FIXED = AddressMapping(fixed_server="irc.example.net")


@pytest.mark.parametrize(
    ("mapping", "localpart", "expected"),
    [
        (OPEN, "#chan%irc.example.net", ChannelAddress("irc.example.net", Channel("#chan"))),
        (OPEN, "#Chan%IRC.Example.NET", ChannelAddress("irc.example.net", Channel("#chan"))),
        (OPEN, "#a[b]%irc.example.net", ChannelAddress("irc.example.net", Channel("#a{b}"))),
        (OPEN, "#50%off%irc.example.net", ChannelAddress("irc.example.net", Channel("#50%off"))),
        (OPEN, "\\26local%irc.example.net", ChannelAddress("irc.example.net", Channel("&local"))),
        (
            OPEN,
            "#caf\u00e9%irc.example.net",
            ChannelAddress("irc.example.net", Channel("#caf\u00e9")),
        ),
        (OPEN, "bob%irc.example.net", UserAddress("irc.example.net", Nick("bob"))),
        (OPEN, "Bob[away]%irc.example.net", UserAddress("irc.example.net", Nick("bob{away}"))),
        (OPEN, "b\\ob%irc.example.net", UserAddress("irc.example.net", Nick("b|ob"))),
        (OPEN, "irc.example.net", ServerAddress("irc.example.net")),
        (OPEN, "127.0.0.1", ServerAddress("127.0.0.1")),
        (AddressMapping(casemapping="ascii"), "#a[B]%srv", ChannelAddress("srv", Channel("#a[b]"))),
        (AddressMapping(chantypes="#"), "&bob%srv", UserAddress("srv", Nick("&bob"))),
        (FIXED, "#chan", ChannelAddress("irc.example.net", Channel("#chan"))),
        (FIXED, "bob", UserAddress("irc.example.net", Nick("bob"))),
        (FIXED, "#a%b", ChannelAddress("irc.example.net", Channel("#a%b"))),
    ],
)
def test_parse(mapping: AddressMapping, localpart: str, expected: Address) -> None:
    assert mapping.parse(localpart) == expected


@pytest.mark.parametrize(
    ("mapping", "localpart"),
    [
        (OPEN, ""),
        (OPEN, "%irc.example.net"),
        (OPEN, "#chan%"),
        (OPEN, "#chan"),
        (OPEN, "bob%irc example"),
        (OPEN, "bob%irc/example"),
        (OPEN, "b\\20ob%srv"),
        (OPEN, "bob!u@h%srv"),
        (OPEN, "bob.x%srv"),
        (OPEN, ":bob%srv"),
        (OPEN, "#a,b%srv"),
        (OPEN, "#a\\20b%srv"),
        (OPEN, "#CAF\u00c9%srv"),
        (FIXED, ""),
        (FIXED, "irc.example.net"),
        (FIXED, "bob%irc.example.net"),
    ],
)
def test_parse_refuses(mapping: AddressMapping, localpart: str) -> None:
    with pytest.raises(AddressError):
        mapping.parse(localpart)


def test_contacts_and_rooms_do_not_mix() -> None:
    assert OPEN.parse_contact("bob%srv") == UserAddress("srv", Nick("bob"))
    assert OPEN.parse_room("#chan%srv") == ChannelAddress("srv", Channel("#chan"))
    for localpart in ("#chan%srv", "srv"):
        with pytest.raises(AddressError):
            OPEN.parse_contact(localpart)
    for localpart in ("bob%srv", "srv"):
        with pytest.raises(AddressError):
            OPEN.parse_room(localpart)
    with pytest.raises(AddressError, match="channel name, not a nick"):
        OPEN.render(UserAddress("srv", Nick("#chan")))


@pytest.mark.parametrize(
    ("mapping", "address", "expected"),
    [
        (OPEN, ChannelAddress("irc.example.net", Channel("#chan")), "#chan%irc.example.net"),
        (OPEN, ChannelAddress("IRC.example.net", Channel("#Chan[1]")), "#chan{1}%irc.example.net"),
        (OPEN, ChannelAddress("srv", Channel("&local")), "\\26local%srv"),
        (OPEN, ChannelAddress("srv", Channel("#it's")), "#it\\27s%srv"),
        (OPEN, UserAddress("srv", Nick("Bob")), "bob%srv"),
        (OPEN, UserAddress("srv", Nick("b\\5cd")), "b|5cd%srv"),
        (AddressMapping(casemapping="ascii"), UserAddress("srv", Nick("b\\5cd")), "b\\5c5cd%srv"),
        (OPEN, ServerAddress("IRC.Example.net"), "irc.example.net"),
        (OPEN, ServerAddress("::1"), "\\3a\\3a1"),
        (FIXED, ChannelAddress("irc.example.net", Channel("#chan")), "#chan"),
        (FIXED, UserAddress("IRC.EXAMPLE.NET", Nick("bob")), "bob"),
    ],
)
def test_render(mapping: AddressMapping, address: Address, expected: str) -> None:
    assert mapping.render(address) == expected


@pytest.mark.parametrize(
    ("mapping", "address"),
    [
        (FIXED, ServerAddress("irc.example.net")),
        (FIXED, UserAddress("other.net", Nick("bob"))),
        (OPEN, ChannelAddress("srv", Channel("#CAF\u00c9"))),
        (OPEN, ChannelAddress("srv", Channel("nochantype"))),
        (OPEN, UserAddress("srv", Nick(""))),
        (OPEN, UserAddress("bad server", Nick("bob"))),
    ],
)
def test_render_refuses(mapping: AddressMapping, address: Address) -> None:
    with pytest.raises(AddressError):
        mapping.render(address)


_NICK_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789[]\\`_^{|}-"
_CHANNEL_CHARS = _NICK_CHARS + "#&'\"/:<>@%!.+=\u00e9\u00df\u4e2d"
_SERVER = st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,12}){0,3}", fullmatch=True)
_CASEMAPPING = st.sampled_from(["rfc1459", "strict-rfc1459", "ascii", "rfc8265"])


@st.composite
def _addresses(draw: st.DrawFn, mapping: AddressMapping) -> Address:
    server = mapping.fixed_server or draw(_SERVER)
    kind = draw(st.sampled_from(["channel", "user"] + ([] if mapping.fixed_server else ["server"])))
    if kind == "server":
        return ServerAddress(server)
    if kind == "channel":
        name = draw(st.sampled_from("#&")) + draw(st.text(_CHANNEL_CHARS, max_size=20))
        return ChannelAddress(server, mapping.channel(name))
    name = draw(st.sampled_from(_NICK_CHARS[:52])) + draw(st.text(_NICK_CHARS, max_size=15))
    return UserAddress(server, mapping.nick(name))


@given(st.data(), _CASEMAPPING, st.booleans())
def test_render_then_parse_round_trips_and_is_case_safe(
    data: st.DataObject, casemapping: str, fixed: bool
) -> None:
    mapping = AddressMapping("irc.example.net" if fixed else None, casemapping=casemapping)
    address = data.draw(_addresses(mapping))
    localpart = mapping.render(address)
    assert mapping.parse(localpart) == address
    assert localpart == localpart.lower()  # survives the XMPP server's case folding


# --- message text --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action", "body"),
    [
        ("hello", False, "hello"),
        ("waves", True, "/me waves"),
        ("\x02bold\x02 and \x1ditalic\x1d", False, "*bold* and _italic_"),
        ("\x0304red\x03 plain", False, "red plain"),
        ("\x1fline\x1f", False, "line"),
    ],
)
def test_irc_to_xmpp(text: str, action: bool, body: str) -> None:
    assert irc_to_xmpp(text, action) == body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("hello", OutgoingText("hello")),
        ("/me waves", OutgoingText("waves", action=True)),
        ("/mean", OutgoingText("/mean")),
        ("really *bold*", OutgoingText("really \x02bold")),
        ("two\nlines", OutgoingText("two\nlines")),
    ],
)
def test_xmpp_to_irc(body: str, expected: OutgoingText) -> None:
    assert xmpp_to_irc(body) == expected


_TEXT = st.text(st.sampled_from("*_~`> \n\t\r\x01\x02\x03\x0b\x0f\x1d\x1fab,09")) | st.text()


@given(_TEXT, st.booleans())
@example("a\x0bb", False)
@example("\x02bold", True)
def test_irc_to_xmpp_shortcut_gives_the_full_conversion(text: str, action: bool) -> None:
    """A line without mIRC codes is its own body: what the styled-text round trip gives."""
    full = to_xep0393(parse_mirc(text))
    assert irc_to_xmpp(text, action) == (ME + full if action else full)


@given(_TEXT)
@example("/me *b*")
@example("_i_ ~s~ `m`")
@example("```\nx\n```")
@example("a\x0bb")
def test_xmpp_to_irc_shortcut_gives_the_full_conversion(body: str) -> None:
    """A body without markers, quotes or controls goes to IRC as it is: what the full
    conversion gives."""
    expected = xmpp_to_irc(body)
    text = body.removeprefix(ME)
    assert expected == OutgoingText(render_mirc(from_xep0393(text)), body.startswith(ME))


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("hello wrld", "hello world", "s/wrld/world/"),
        ("I like cats a lot", "I like dogs a lot", "s/cats/dogs/"),
        ("a b c", "a b c d", "s/c/c d/"),
        ("a b c", "x a b c", "s/a/x a/"),
        ("abc", "totally different text", "totally different text *"),
        ("same", "same", "same"),
    ],
)
def test_correction_text(old: str, new: str, line: str) -> None:
    assert correction_text(old, new) == line


@given(st.text(), st.text())
def test_correction_text_never_raises(old: str, new: str) -> None:
    assert isinstance(correction_text(old, new), str)


@pytest.mark.parametrize(
    ("nick", "ok"),
    [
        ("alice", True),
        ("[away]`_^{|}-9", True),
        ("", False),
        ("9lives", False),
        ("-dash", False),
        ("has space", False),
        ("née", False),
        ("a" * 31, False),
    ],
)
def test_nick_problem(nick: str, ok: bool) -> None:
    assert (nick_problem(nick) is None) is ok


@pytest.mark.parametrize(
    ("localpart", "username"),
    [
        ("alice", "alice"),
        ("Alice.B+x", "alicebx"),
        ("ünï", "n"),
        ("...", "xmpp"),
        ("a" * 20, "a" * 10),
    ],
)
def test_irc_username(localpart: str, username: str) -> None:
    assert irc_username(localpart) == username


BOB = Prefix("Bob[1]", "~robert", "host.example.org")


@pytest.mark.parametrize(
    ("mask", "who", "matches"),
    [
        ("Bob[1]!*@*", BOB, True),
        ("bob{1}!*@*", BOB, True),  # rfc1459: [ and { are the same letter
        ("bob[1]", BOB, True),  # a nick alone
        ("*!*@host.example.org", BOB, True),
        ("*!*@*.EXAMPLE.org", BOB, True),
        ("~robert@host.example.org", BOB, True),  # user@host alone
        ("*!~rob?rt@*", BOB, True),
        ("*!*@other.example.org", BOB, False),
        ("bob[2]!*@*", BOB, False),
        ("bob*", BOB, True),
        ("b.b[1]!*@*", BOB, False),  # a dot is a dot, not any character
        ("*!*@host.example.org", Prefix("Bob[1]"), False),  # host unknown: no match
        ("Bob[1]!*@*", Prefix("Bob[1]"), True),
        ("$a:robert", BOB, False),  # extended bans are the server's business
        ("~q:*!*@*", BOB, False),
        ("", BOB, False),
    ],
)
def test_mask_matches(mask: str, who: Prefix, matches: bool) -> None:
    assert mask_matches(mask, who) is matches


@given(st.text(max_size=20), st.text(max_size=10), st.none() | st.text(max_size=10))
def test_mask_matches_never_raises(mask: str, nick: str, host: str | None) -> None:
    mask_matches(mask, Prefix(nick or "x", host, host))


def test_notice_text() -> None:
    assert notice_text("hello") == "[notice] hello"
