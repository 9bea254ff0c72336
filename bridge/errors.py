"""Errors a client caused, and the responses they become.

Why a module of their own: the rooms raise them (a full bridge, an unusable offer) and the
HTTP layer answers them, so neither has to import the other to agree on what went wrong.
"""

from __future__ import annotations

from aiohttp import web


class HttpError(Exception):
    """An error the client caused; becomes a response with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def text_response(status: int, message: str, **headers: str) -> web.Response:
    """A one-line plain-text answer: what WHIP/WHEP clients (curl, OBS) show as is."""
    return web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)


def json_error(status: int, message: str) -> web.Response:
    """An ``{"error": ...}`` answer: what the page's ``/api`` calls read."""
    return web.json_response({"error": message}, status=status)
