"""Matrix IDs ↔ JID local parts: a case-safe bijection (legacy_plugins.matrix.ids)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import JID

from legacy_plugins.matrix.ids import (
    ParsedLocalpart,
    id_to_localpart,
    is_room_id,
    is_user_id,
    localpart_to_id,
    server_name,
)

ENCODED = [
    ("@alice:example.org", "alice%example.org"),
    ("@bob.smith-1+x:example.org", "bob.smith-1+x%example.org"),
    ("@Bob:example.org", "_bob%example.org"),
    ("@bob_x:example.org", "bob__x%example.org"),
    ("@Bob_X:example.org:8448", "_bob___x%example.org=3a8448"),
    ("@a/b=c:example.org", "a=2fb=3dc%example.org"),
    ("@alice:[::1]:8008", "alice%=5b=3a=3a1=5d=3a8008"),
    ("#café:example.org", "#caf=c3=a9%example.org"),
    ("!OGEhHV:example.org", "!_o_g_eh_h_v%example.org"),
    ("!tuyAF74tmy8", "!tuy_a_f74tmy8"),
    ("#Room:example.org", "#_room%example.org"),
]


@pytest.mark.parametrize(("matrix_id", "localpart"), ENCODED)
def test_encoding_table(matrix_id: str, localpart: str) -> None:
    assert id_to_localpart(matrix_id) == localpart
    assert localpart_to_id(localpart).matrix_id == matrix_id


@pytest.mark.parametrize(("matrix_id", "localpart"), ENCODED)
def test_any_case_of_the_jid_names_the_same_id(matrix_id: str, localpart: str) -> None:
    # XMPP servers and clients fold the local part; the mixed-case ID must survive.
    assert localpart_to_id(localpart.upper()).matrix_id == matrix_id
    assert localpart_to_id(JID(f"{localpart}@matrix.example.org").node).matrix_id == matrix_id


@pytest.mark.parametrize(
    ("localpart", "kind"),
    [("alice%example.org", "user"), ("!abc%example.org", "room"), ("#abc%example.org", "alias")],
)
def test_users_rooms_and_aliases_never_share_a_jid(localpart: str, kind: str) -> None:
    assert localpart_to_id(localpart).kind == kind


@pytest.mark.parametrize(
    "localpart",
    [
        "alice",  # no server
        "alice%",  # empty server
        "%example.org",  # empty local part
        "a%b%c",  # two separators
        "_1bc%example.org",  # '_' must be followed by a letter or '_'
        "a=zz%example.org",  # not hex
        "a=6%example.org",  # truncated escape
        "=61lice%example.org",  # 'a' escaped: not the canonical spelling
        "=ff%example.org",  # not UTF-8
        "a:b%example.org",  # ':' is not in the alphabet
        "a%exa mple.org",
        "#",
        "",
    ],
)
def test_malformed_local_parts_are_refused(localpart: str) -> None:
    with pytest.raises(ValueError):
        localpart_to_id(localpart)


@pytest.mark.parametrize("bad", ["alice", "@alice", "alice:example.org", "$event:x", "", "@:x"])
def test_only_ids_are_encoded(bad: str) -> None:
    with pytest.raises(ValueError):
        id_to_localpart(bad)


def test_validators_and_server_name() -> None:
    assert is_user_id("@alice:example.org") and not is_user_id("@alice")
    assert is_room_id("!abc:example.org") and is_room_id("!abc") and not is_room_id("#a:b")
    assert server_name("@alice:example.org:8448") == "example.org:8448"
    assert server_name("!hashonly") == ""


matrix_localparts = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=30,
)
servers = st.from_regex(r"[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True)


@given(sigil=st.sampled_from("@!#"), local=matrix_localparts, server=servers)
def test_round_trip_for_any_id(sigil: str, local: str, server: str) -> None:
    matrix_id = f"{sigil}{local}:{server}"
    localpart = id_to_localpart(matrix_id)
    assert localpart == localpart.lower()
    assert JID(f"{localpart}@gw.example.org").node == localpart  # a valid JID
    kind = {"@": "user", "!": "room", "#": "alias"}[sigil]
    assert localpart_to_id(localpart) == ParsedLocalpart(kind, matrix_id)  # type: ignore[arg-type]


@given(st.text(max_size=40))
def test_decoding_never_raises_anything_but_value_error(text: str) -> None:
    try:
        parsed = localpart_to_id(text)
    except ValueError:
        return
    assert id_to_localpart(parsed.matrix_id) == text.lower()
