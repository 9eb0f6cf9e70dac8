"""Secrets out of the logs: the one filter every network's process and the link install.

At DEBUG slixmpp writes every stanza it sends and receives, slidge every setting, and the
plugins their wire; among them are the component secret, the database password and what
users type to log in to their networks. :class:`RedactSecrets` rewrites each log record
as it is made, whichever logger makes it. Secrets in a form or an IQ are found by their
place (a ``password`` element, a field named like a password or of type ``text-private``);
a password typed in a chat, answering slidge's chat command (``register``,
``contact … configure``), is found by the question it answers: while such an answer is
awaited (:func:`private_answer_from`, which fix 52 calls, in
:mod:`gateway.slidge_fixes_registration`), the bodies of the messages from that JID are
redacted.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

_awaited: dict[str, int] = {}
"""The bare JIDs whose next chat message answers a question for a private field, with the
number of such questions open for each."""

_MESSAGE = re.compile(r"<message\b[^>]*>.*?(?:</message>|\Z)", re.S)
_FROM = re.compile(r"""\bfrom=(['"])([^'"/]*)""")
_BODY = re.compile(r"(<body\b[^>]*>)(.*?)(</body>|\Z)", re.S)


@contextlib.contextmanager
def private_answer_from(jid: str) -> Iterator[None]:
    """While this is open, the body of every message from bare JID ``jid`` (whose next
    message answers a question for a password, a token...) is redacted in the logs."""
    bare = jid.lower()
    _awaited[bare] = _awaited.get(bare, 0) + 1
    try:
        yield
    finally:
        if left := _awaited.pop(bare) - 1:
            _awaited[bare] = left


def _answer_hidden(message: re.Match[str]) -> str:
    stanza = message.group(0)
    sender = _FROM.search(stanza[: stanza.find(">") + 1])
    if sender is None or sender.group(2).lower() not in _awaited:
        return stanza
    return _BODY.sub(r"\1[redacted]\3", stanza)


class RedactSecrets(logging.Filter):
    """Hide credentials in logs, whichever logger writes them.

    Registration forms carry legacy passwords; component handshakes carry a hash of the
    secret; slidge logs each of its settings at DEBUG, the component secret included.
    Anything in a ``password`` element, a ``handshake`` element, the value of a data-form
    field whose name suggests a secret or whose type is ``text-private``, the body of a
    message that answers a private question (:func:`private_answer_from`), and every
    occurrence of a known secret value is replaced by ``[redacted]``. :meth:`install`
    applies it to every record created in the process, so no logger (nor slidge's
    ``basicConfig(force=True)``) can bypass it.
    """

    _PATTERNS = (
        ("<password", re.compile(r"(<password[^>]*>)(.*?)(</password>)", re.S)),
        ("<handshake", re.compile(r"(<handshake[^>]*>)(.*?)(</handshake>)", re.S)),
        # The value inside the field's own element: not past its end, nor into the next
        # field when this one is empty (``<field var="password"/>``).
        (
            "<field",
            re.compile(
                r"(<field[^>]*var=['\"][^'\"]*(?:pass|secret|token|key)[^'\"]*['\"][^>]*(?<!/)>"
                r"(?:(?!</field>|<field\b).)*?<value>)(.*?)(</value>)",
                re.S | re.I,
            ),
        ),
        (
            "text-private",
            re.compile(
                r"(<field[^>]*type=['\"]text-private['\"][^>]*(?<!/)>"
                r"(?:(?!</field>|<field\b).)*?<value>)(.*?)(</value>)",
                re.S,
            ),
        ),
    )
    """Each pattern, after the text without which it cannot match (a cheaper test)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(self._scrub(a) for a in args)
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg, self.secrets)
        return True

    def _scrub(self, value: object) -> object:
        if isinstance(value, str | bytes):
            return self.redact(value, self.secrets)
        if value is None or isinstance(value, int | float):
            return value
        # Anything else is turned into text only when the record is written: a stanza
        # object (slidge logs registration forms as such) would show its passwords then.
        # Its text is checked now and replaced by the redacted text if that differs.
        try:
            text = repr(value) if isinstance(value, tuple | list | dict) else str(value)
        except Exception:  # a broken __str__ is left to the logging module
            return value
        redacted = self.redact(text, self.secrets)
        return value if redacted == text else redacted

    @classmethod
    def redact(cls, text: str | bytes, secrets: Iterable[str] = ()) -> str:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for secret in secrets:
            text = text.replace(secret, "[redacted]")
        for marker, pattern in cls._PATTERNS:
            if marker in text:
                text = pattern.sub(r"\1[redacted]\3", text)
        if _awaited:
            text = _MESSAGE.sub(_answer_hidden, text)
        return text

    def install(self) -> None:
        """Apply this filter to every log record created from now on in this process."""
        make_record = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            self.filter(record)
            return record

        logging.setLogRecordFactory(factory)
