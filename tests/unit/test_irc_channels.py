"""The channel tracker: membership rebuilt from events, as a table of stories."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.irc import events as ev
from legacy_plugins.irc.channels import ChannelTracker
from legacy_plugins.irc.events import Channel, ISupport, Member, ModeChange, Nick, Prefix

ISUPPORT = ISupport().updated(["PREFIX=(qaohv)~&@%+"])
C, ME = Channel("#Chan"), Nick("me")


def joined(nick: str, own: bool = False, channel: Channel = C) -> ev.Joined:
    return ev.Joined(channel, Nick(nick), Prefix(nick, "u", "h"), own=own)


def tracker_with(*nicks: str) -> ChannelTracker:
    tracker = ChannelTracker(lambda: ISUPPORT)
    tracker.apply(joined("me", own=True))
    members = tuple(Member(Nick(n.lstrip("@+")), n[: len(n) - len(n.lstrip("@+"))]) for n in nicks)
    tracker.apply(ev.ChannelMembers(C, (Member(ME), *members)))
    return tracker


def test_own_join_then_names() -> None:
    tracker = tracker_with("@Bob", "+carol")
    state = tracker.get("#chan")
    assert state is not None and state.names_received and state.name == "#Chan"
    assert tracker.member("#CHAN", "bob") == Member(Nick("Bob"), "@")
    assert tracker.channels_of("CAROL") == (C,)


def test_others_join_part_quit_and_kick() -> None:
    tracker = tracker_with("bob")
    assert tracker.apply(joined("dave")) == (C,)
    assert tracker.apply(ev.Parted(C, Nick("dave"), "bye")) == (C,)
    assert tracker.member(C, "dave") is None
    assert tracker.apply(ev.Quit(Nick("bob"), "gone")) == (C,)
    assert tracker.apply(ev.Quit(Nick("nobody"), "gone")) == ()
    tracker.apply(joined("erin"))
    tracker.apply(ev.Kicked(C, Nick("erin"), Nick("me"), "out"))
    assert tracker.member(C, "erin") is None


def test_a_join_to_a_channel_we_are_not_in_is_ignored() -> None:
    tracker = tracker_with()
    assert tracker.apply(joined("bob", channel=Channel("#other"))) == ()
    assert "#other" not in tracker


def test_nick_change_keeps_prefixes_and_reports_channels_before() -> None:
    tracker = tracker_with("@bob")
    assert tracker.apply(ev.NickChanged(Nick("bob"), Nick("robert"))) == (C,)
    assert tracker.member(C, "robert") == Member(Nick("robert"), "@")
    assert tracker.member(C, "bob") is None


def test_member_modes_add_and_remove_prefixes_in_order() -> None:
    tracker = tracker_with("bob")
    changes = (
        ModeChange(True, "v", "bob", "member"),
        ModeChange(True, "o", "bob", "member"),
        ModeChange(True, "k", "key", "param"),
    )
    tracker.apply(ev.ChannelModeChanged(C, "me", changes))
    assert tracker.member(C, "bob") == Member(Nick("bob"), "@+")
    tracker.apply(ev.ChannelModeChanged(C, "me", (ModeChange(False, "o", "bob", "member"),)))
    assert tracker.member(C, "bob") == Member(Nick("bob"), "+")


def test_own_part_or_kick_forgets_the_channel() -> None:
    tracker = tracker_with("bob")
    tracker.apply(ev.Parted(C, ME, "", own=True))
    assert tracker.get(C) is None and tracker.channels_of("bob") == ()
    tracker = tracker_with("bob")
    tracker.apply(ev.Kicked(C, ME, Nick("bob"), "", own=True))
    assert list(tracker) == []


def test_topic_and_clear() -> None:
    tracker = tracker_with()
    tracker.apply(ev.Topic(C, "hello"))
    state = tracker.get(C)
    assert state is not None and state.topic == "hello"
    tracker.clear()
    assert tracker.get(C) is None


def test_bans_make_occupants_without_a_mode_outcasts() -> None:
    tracker = tracker_with("@bob", "carol", "+dave")
    tracker.apply(joined("erin"))  # erin!u@h
    assert tracker.standing(C, "carol") == ("participant", "none")
    ban = (ModeChange(True, "b", "*!*@h", "list"), ModeChange(True, "b", "Carol!*@*", "list"))
    assert tracker.apply(ev.ChannelModeChanged(C, "bob", ban)) == (C,)
    assert tracker.standing(C, "carol") == ("visitor", "outcast")
    assert tracker.standing(C, "erin") == ("visitor", "outcast")  # by host, from her JOIN
    assert tracker.standing(C, "bob") == ("moderator", "admin")  # ops keep their mode
    assert tracker.standing(C, "dave") == ("participant", "member")  # so do voiced people
    assert tracker.bans_on(C, "CAROL") == ["Carol!*@*"]
    unban = (ModeChange(False, "b", "Carol!*@*", "list"),)
    tracker.apply(ev.ChannelModeChanged(C, "bob", unban))
    assert not tracker.banned(C, "carol") and tracker.banned(C, "erin")


def test_the_ban_list_and_masks_from_names_and_who() -> None:
    tracker = ChannelTracker(lambda: ISUPPORT)
    tracker.apply(joined("me", own=True))
    masks = (Prefix("bob", "robert", "b.example"),)
    tracker.apply(
        ev.ChannelMembers(C, (Member(ME), Member(Nick("bob")), Member(Nick("carol"))), masks)
    )
    tracker.apply(ev.ServerReply("367", ("#chan", "*!robert@*", "op", "0")))
    assert tracker.banned(C, "bob") and not tracker.banned(C, "carol")
    tracker.apply(ev.WhoEntry("#chan", Prefix("carol", "c", "c.example"), away=True))
    assert tracker.mask_of("carol") == Prefix("carol", "c", "c.example")
    assert tracker.away_message("carol") == ""
    assert tracker.apply(ev.ServerReply("367", ("#elsewhere", "*!*@*"))) == ()


def test_masks_and_away_follow_nick_changes_and_are_forgotten_with_the_person() -> None:
    tracker = tracker_with("bob")
    tracker.apply(ev.MessageReceived(Prefix("bob", "b", "h"), "#Chan", "hi", "privmsg", C))
    assert tracker.apply(ev.AwayChanged(Nick("bob"), "lunch")) == (C,)
    tracker.apply(ev.NickChanged(Nick("bob"), Nick("robert")))
    assert tracker.mask_of("robert") == Prefix("robert", "b", "h")
    assert tracker.away_message("ROBERT") == "lunch"
    tracker.apply(ev.AwayChanged(Nick("robert"), None))
    assert tracker.away_message("robert") is None
    tracker.apply(ev.AwayChanged(Nick("robert"), "again"))
    tracker.apply(ev.Parted(C, Nick("robert"), "bye"))
    assert tracker.mask_of("robert") == Prefix("robert")
    assert tracker.away_message("robert") is None
    # Someone we share no channel with is not remembered.
    tracker.apply(ev.MessageReceived(Prefix("zed", "z", "h"), "me", "psst", "privmsg", None))
    assert tracker.mask_of("zed") == Prefix("zed")


def message(nick: str, account: str | None) -> ev.MessageReceived:
    return ev.MessageReceived(Prefix(nick, "u", "h"), C, "hi", "privmsg", C, account=account)


def account_line(nick: str, account: str) -> ev.Unhandled:
    return ev.Unhandled("ACCOUNT", (account,), f"{nick}!u@h")


def test_accounts_from_extended_join_account_tag_and_account_notify() -> None:
    tracker = tracker_with("bob", "carol")
    # extended-join: "dave" logged in as "Dave", "erin" not ("*": account None)
    tracker.apply(ev.Joined(C, Nick("dave"), Prefix("dave"), account="Dave", realname="D"))
    tracker.apply(ev.Joined(C, Nick("erin"), Prefix("erin"), account=None, realname="E"))
    assert (tracker.account_of("DAVE"), tracker.account_of("erin")) == ("Dave", None)
    # account-tag on a message; its absence says nothing
    assert tracker.apply(message("bob", "bobacct")) == (C,)
    tracker.apply(message("bob", None))
    assert tracker.account_of("bob") == "bobacct"
    # account-notify: login and logout, reported in the nick's channels
    assert tracker.apply(account_line("carol", "carolacct")) == (C,)
    assert tracker.account_of("carol") == "carolacct"
    assert tracker.apply(account_line("carol", "*")) == (C,)
    assert tracker.account_of("carol") is None
    assert tracker.apply(account_line("stranger", "x")) == ()
    assert tracker.account_of("stranger") is None
    # a plain JOIN (no extended-join) keeps what is known; a nick change carries it
    tracker.apply(ev.NickChanged(Nick("bob"), Nick("robert")))
    assert (tracker.account_of("bob"), tracker.account_of("robert")) == (None, "bobacct")
    # gone from every channel: forgotten
    tracker.apply(ev.Quit(Nick("robert"), "bye"))
    assert tracker.account_of("robert") is None
    tracker.apply(message("stranger", "x"))  # not in a channel of ours: not kept
    assert tracker.account_of("stranger") is None
    tracker.clear()
    assert tracker.account_of("dave") is None


_nicks = st.sampled_from(["me", "bob", "Bob", "carol", "dave"])
_events = st.one_of(
    st.builds(joined, _nicks, st.booleans()),
    st.builds(ev.Parted, st.just(C), _nicks.map(Nick), st.text(), st.booleans()),
    st.builds(ev.Quit, _nicks.map(Nick), st.text()),
    st.builds(ev.NickChanged, _nicks.map(Nick), _nicks.map(Nick)),
    st.builds(
        ev.ChannelModeChanged,
        st.just(C),
        st.none(),
        st.lists(
            st.builds(ModeChange, st.booleans(), st.sampled_from("ovbk"), _nicks, st.just("member"))
        ).map(tuple),
    ),
    st.builds(
        ev.ChannelModeChanged,
        st.just(C),
        st.none(),
        st.lists(
            st.builds(
                ModeChange,
                st.booleans(),
                st.just("b"),
                st.sampled_from(["*!*@h", "bob"]),
                st.just("list"),
            )
        ).map(tuple),
    ),
    st.builds(ev.AwayChanged, _nicks.map(Nick), st.none() | st.text(max_size=3)),
    st.builds(account_line, _nicks, st.sampled_from(["*", "acct"])),
    st.builds(message, _nicks, st.none() | st.just("acct")),
    st.builds(
        ev.WhoEntry,
        st.just("#chan"),
        st.builds(Prefix, _nicks, st.just("u"), st.just("h")),
        st.booleans(),
    ),
)


@given(st.lists(_events, max_size=30))
def test_never_raises_on_any_event_sequence(events: list[ev.Event]) -> None:
    tracker = ChannelTracker(lambda: ISUPPORT)
    for event in events:
        tracker.apply(event)
        for state in tracker:
            assert all(tracker.fold(m.nick) == key for key, m in state.members.items())
            for member in state.members.values():
                tracker.standing(state.name, member.nick)
        for nick in ("me", "bob", "carol", "dave"):
            assert tracker.account_of(nick) is None or tracker.channels_of(nick)
