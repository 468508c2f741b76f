"""Daphne answers a request line or header that is too long, instead of dropping the connection.

Twisted's HTTP channel (under daphne) reads the request line and headers with
a 16 KiB line limit and, past it, closes the connection without a word: the
client sees "connection closed" for a 60,000-character query string. The
limit stays; the answer becomes a 414 the client can read. (Behind a reverse
proxy, the proxy usually answers first.)
"""

from __future__ import annotations

from typing import Any

from twisted.web.http import HTTPChannel

BODY = b"the request line or a header is longer than 16384 bytes\n"
RESPONSE = (
    b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
    + b"Content-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


def _line_too_long(self: Any, line: bytes) -> None:
    self.transport.write(RESPONSE)
    self.loseConnection()


HTTPChannel.lineLengthExceeded = _line_too_long  # type: ignore[method-assign]
