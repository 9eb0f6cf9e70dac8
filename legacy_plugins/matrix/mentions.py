"""Mentions in Matrix messages: who one mentions, and where their names stand.

Matrix → XMPP: `mentioned` reads who a message mentions (its ``m.mentions``, or the
"pills" its HTML links to), which :mod:`.translate` puts on each `Message`;
`mention_spans` finds where those people's room nicknames stand in the text, so that
the session can put XEP-0372 references there. XMPP → Matrix needs nothing of this
module: the XMPP client marks whom it mentions, and :mod:`.contents` writes them into
``m.mentions``. Pure: no I/O, and the names are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .events import HTML_FORMAT
from .ids import UserId, is_user_id

__all__ = ["MAX_MENTIONS", "MentionSpan", "mention_spans", "mentioned"]

MAX_MENTIONS = 20
"""Users of one message looked up for XEP-0372 references, at most."""
_PILL = re.compile(r"""href=["']https://matrix\.to/#/((?:@|%40)[^"'/?#]+)""")


def mentioned(content: Mapping[str, Any]) -> tuple[UserId, ...]:
    """The users a message mentions: the user IDs of its ``m.mentions``, and those its
    HTML links to the way Matrix clients write a mention (a "pill",
    ``<a href="https://matrix.to/#/@bob:example.org">Bob</a>``), for clients that do not
    fill ``m.mentions``. In order, each once, `MAX_MENTIONS` at most."""
    found: list[str] = []
    listed = content.get("m.mentions")
    ids = listed.get("user_ids") if isinstance(listed, Mapping) else None
    if isinstance(ids, list):
        found += [u for u in ids if isinstance(u, str)]
    formatted = content.get("formatted_body")
    if isinstance(formatted, str) and content.get("format") == HTML_FORMAT:
        found += [unquote(u) for u in _PILL.findall(formatted)]
    users = [UserId(u) for u in dict.fromkeys(found) if is_user_id(u)]
    return tuple(users[:MAX_MENTIONS])


@dataclass(frozen=True, slots=True)
class MentionSpan:
    """`user`'s name is at ``text[begin:end]`` (code points, end exclusive: XEP-0372's
    ``begin`` and ``end``)."""

    begin: int
    end: int
    user: UserId


def mention_spans(text: str, names: Mapping[UserId, str]) -> tuple[MentionSpan, ...]:
    """Where each user's name stands in `text` as a word of its own (not inside a longer
    word), every time; the earlier and then the longer of two that overlap kept."""
    found: list[MentionSpan] = []
    for user, name in names.items():
        if not name:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
            found.append(MentionSpan(m.start(), m.end(), user))
    found.sort(key=lambda span: (span.begin, -span.end))
    kept: list[MentionSpan] = []
    for span in found:
        if not kept or span.begin >= kept[-1].end:
            kept.append(span)
    return tuple(kept)
