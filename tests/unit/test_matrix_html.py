"""Matrix HTML ↔ StyledText ↔ XEP-0393 (legacy_plugins.matrix.html)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.formatting import StyledText, from_xep0393, to_plain, to_xep0393
from legacy_plugins.matrix.html import html_to_styled, styled_to_html

INCOMING = [
    ("plain text", "plain text"),
    ("<b>bold</b> text", "*bold* text"),
    ("<strong>a</strong> <em>b</em> <del>c</del> <code>d</code>", "*a* _b_ ~c~ `d`"),
    ("<u>underline</u> is dropped", "underline is dropped"),
    ("<p>one</p><p>two</p>", "one\ntwo"),
    ("line<br>break<br/>again", "line\nbreak\nagain"),
    ("  lots   of\n  space  ", "lots of space"),
    ("<blockquote>quoted<br>twice</blockquote>after", "> quoted\n> twice\nafter"),
    ("<ul><li>one</li><li>two</li></ul>", "• one\n• two"),
    ('<ol start="3"><li>c</li><li>d</li></ol>', "3. c\n4. d"),
    ("<pre><code>a\n  b\n</code></pre>", "```\na\n  b\n```"),
    ("<h1>Title</h1>text", "*Title*\ntext"),
    ('<a href="https://matrix.to/#/@bob:x.org">Bob</a>: hi', "Bob: hi"),
    ('<a href="https://x.org/page">the page</a>', "the page (https://x.org/page)"),
    ('<a href="https://x.org">https://x.org</a>', "https://x.org"),
    ("&lt;b&gt;not bold&lt;/b&gt; &amp; co", "<b>not bold</b> & co"),
    ("<mx-reply><blockquote>old</blockquote></mx-reply>the answer", "the answer"),
    ('<img src="mxc://x/y" alt=":smile:"> hi', ":smile: hi"),
    ("<b>unclosed <i>tags", "*unclosed _tags_*"),
    ("stray </b> end tag", "stray end tag"),
]

HOSTILE = [
    ("<script>alert(1)</script>hello", "hello"),
    ("<style>body{display:none}</style>visible", "visible"),
    ('<a href="javascript:alert(1)">click</a>', "click"),
    ('<img src=x onerror="alert(1)">', ""),
    ('<div onclick="steal()">text</div>', "text"),
    ("<iframe src='https://evil.example'></iframe>ok", "ok"),
    ("<scr<script>ipt>alert(1)</script>", "ipt>alert(1)"),
    ("<svg><script>alert(1)</script></svg>x", "x"),
]


@pytest.mark.parametrize(("html", "xep0393"), INCOMING)
def test_incoming_html(html: str, xep0393: str) -> None:
    assert to_xep0393(html_to_styled(html)) == xep0393


@pytest.mark.parametrize(("html", "text"), HOSTILE)
def test_hostile_html_becomes_harmless_text(html: str, text: str) -> None:
    assert to_plain(html_to_styled(html)) == text


OUTGOING = [
    ("plain text", None),
    ("*bold* text", "<strong>bold</strong> text"),
    ("_it_ ~gone~ `code`", "<em>it</em> <del>gone</del> <code>code</code>"),
    ("*a <b> & c*", "<strong>a &lt;b&gt; &amp; c</strong>"),
    ("> quoted\n> more\nafter", "<blockquote>quoted<br>more</blockquote>after"),
    ("```\nline 1\nline 2\n```", "<pre><code>line 1\nline 2</code></pre>"),
    ("*a*\n*b*", "<strong>a</strong><br><strong>b</strong>"),
]


@pytest.mark.parametrize(("body", "html"), OUTGOING)
def test_outgoing_html(body: str, html: str | None) -> None:
    assert styled_to_html(from_xep0393(body)) == html


@pytest.mark.parametrize(
    "body", ["*bold* and _it_", "> quote\nreply", "```\ncode\nmore\n```", "a ~b~ `c`"]
)
def test_xep0393_survives_a_round_trip_through_matrix_html(body: str) -> None:
    html = styled_to_html(from_xep0393(body))
    assert html is not None
    assert to_xep0393(html_to_styled(html)) == body


@given(st.text(alphabet=list("<>/&;\"'= abipre!-x\n"), max_size=200) | st.text(max_size=200))
def test_reading_never_raises(html: str) -> None:
    assert isinstance(html_to_styled(html), StyledText)


@given(st.text(max_size=200))
def test_written_html_has_only_our_tags(body: str) -> None:
    html = styled_to_html(from_xep0393(body)) or ""
    stripped = html
    for tag in ("strong", "em", "del", "code", "pre", "blockquote", "u"):
        stripped = stripped.replace(f"<{tag}>", "").replace(f"</{tag}>", "")
    stripped = stripped.replace("<br>", "")
    assert "<" not in stripped and ">" not in stripped
