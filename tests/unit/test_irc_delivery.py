"""echo-message bookkeeping: which of our messages the server relayed or refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.irc.delivery import Deliveries, Outcome
from legacy_plugins.irc.events import casefold


def deliveries() -> Deliveries[str]:
    return Deliveries(casefold)


def test_a_message_is_confirmed_when_every_line_came_back_with_the_first_msgid() -> None:
    d = deliveries()
    d.expect("#Chan", ["one", "two"], "m1", expires=100)
    assert d.echoed("#chan", "one", "id-1", now=1) == []
    assert d.echoed("#CHAN", "two", "id-2", now=1) == [Outcome("m1", True, "id-1")]
    assert len(d) == 0


def test_messages_to_one_target_settle_in_order_and_targets_are_apart() -> None:
    d = deliveries()
    d.expect("#a", ["x"], "a1", expires=100)
    d.expect("#b", ["x"], "b1", expires=100)
    d.expect("#a", ["y"], "a2", expires=100)
    assert d.echoed("#b", "x", None, now=1) == [Outcome("b1", True)]
    assert d.echoed("#a", "x", "i", now=1) == [Outcome("a1", True, "i")]
    assert d.echoed("#a", "y", "j", now=1) == [Outcome("a2", True, "j")]


def test_an_echo_that_skips_a_message_gives_that_message_up() -> None:
    # The server changed (or dropped) the first line: the second one's echo settles both.
    d = deliveries()
    d.expect("#a", ["\x02bold\x02"], "m1", expires=100)
    d.expect("#a", ["plain"], "m2", expires=100)
    assert d.echoed("#a", "plain", "id", now=1) == [Outcome("m1", False), Outcome("m2", True, "id")]


def test_an_echo_that_matches_nothing_is_not_ours() -> None:
    d = deliveries()
    d.expect("#a", ["mine"], "m1", expires=100)
    assert d.echoed("#a", "sent raw", "id", now=1) == []
    assert d.echoed("#other", "mine", "id", now=1) == []
    assert len(d) == 1


def test_a_refusal_answers_the_oldest_line_and_the_message_fails_with_the_first() -> None:
    d = deliveries()
    d.expect("#a", ["one", "two"], "m1", expires=100)
    d.expect("#a", ["three"], "m2", expires=100)
    assert d.refused("#a", "404", "Cannot send to channel", now=1) == []
    assert d.refused("#a", "404", "again", now=1) == [
        Outcome("m1", True, None, ("404", "Cannot send to channel"))
    ]
    assert d.echoed("#a", "three", "id", now=1) == [Outcome("m2", True, "id")]


def test_a_refusal_for_a_target_with_nothing_waiting_is_not_ours() -> None:
    assert deliveries().refused("ghost", "401", "No such nick", now=1) is None


def test_expired_messages_are_given_up_before_a_refusal_is_matched() -> None:
    d = deliveries()
    d.expect("bob", ["lost"], "old", expires=10)
    d.expect("bob", ["new"], "new", expires=100)
    assert d.refused("bob", "401", "No such nick", now=50) == [
        Outcome("old", False),
        Outcome("new", True, None, ("401", "No such nick")),
    ]


def test_clear_returns_every_waiting_token() -> None:
    d = deliveries()
    d.expect("#a", ["1"], "a", expires=100)
    d.expect("#b", ["1"], "b", expires=100)
    d.expect("#a", [], "nothing to wait for", expires=100)
    assert sorted(d.clear()) == ["a", "b"]
    assert len(d) == 0


_TEXT = st.sampled_from(["a", "b", "c"])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["expect", "echo", "refuse"]),
            st.sampled_from(["#a", "#A", "bob"]),
            st.lists(_TEXT, min_size=1, max_size=3),
            st.integers(0, 100),
        ),
        max_size=30,
    )
)
def test_every_message_settles_at_most_once(
    steps: list[tuple[str, str, list[str], int]],
) -> None:
    d: Deliveries[int] = Deliveries(casefold)
    settled: list[int] = []
    expected = 0
    for n, (op, target, lines, now) in enumerate(steps):
        if op == "expect":
            d.expect(target, lines, n, expires=now + 50)
            expected += 1
        elif op == "echo":
            settled += [o.token for o in d.echoed(target, lines[0], str(n), now)]
        else:
            settled += [o.token for o in d.refused(target, "404", "no", now) or ()]
    settled += d.clear()
    assert sorted(settled) == sorted(set(settled))
    assert len(settled) == expected
