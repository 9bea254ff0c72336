"""WHIP/WHEP client side (RFC 9725 and the WHEP draft), used by `likeness call`, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from enhancer.errors import LikenessError

HTTP_TIMEOUT_S = 20.0
# On a WHIP POST: "1" says the publisher already enhanced the video (``likeness call`` does), so
# a Likeness bridge relays it untouched instead of restoring the faces a second time. A header,
# not a query parameter: other WHIP servers ignore an unknown header, while an added query
# parameter could break a signed or strictly parsed endpoint URL.
ENHANCED_HEADER = "X-Likeness-Enhanced"


class WhipError(LikenessError):
    """The WHIP/WHEP endpoint is unreachable or refused the session."""


@dataclass(frozen=True)
class Resource:
    """A created WHIP/WHEP session: DELETE ``url`` to end it."""

    url: str
    answer: str
    headers: dict[str, str]


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def negotiate(
    http: aiohttp.ClientSession, endpoint: str, pc: RTCPeerConnection, token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Resource:
    """Offer ``pc``'s media to a WHIP/WHEP endpoint and apply its answer (non-trickle);
    ``headers`` go on the POST too (e.g. ``{ENHANCED_HEADER: "1"}``)."""
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
    headers = {**(headers or {}), "Content-Type": "application/sdp", **_auth(token)}
    try:
        async with http.post(
            endpoint,
            data=pc.localDescription.sdp,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                first = body.strip().splitlines()[0] if body.strip() else resp.reason
                raise WhipError(f"{endpoint} refused the session: HTTP {resp.status} {first}")
            location = resp.headers.get("Location")
            if not location:
                raise WhipError(f"{endpoint} answered 201 without a Location header")
            resp_headers = dict(resp.headers)
    except aiohttp.ClientConnectorError as e:
        why = "connection refused" if isinstance(e.os_error, ConnectionRefusedError) else (e.os_error.strerror or e)
        raise WhipError(f"cannot reach {endpoint}: {why}") from None
    except (aiohttp.ClientError, TimeoutError) as e:
        raise WhipError(f"{endpoint}: {type(e).__name__} {e}".strip()) from None
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    except Exception as e:
        raise WhipError(f"{endpoint} sent an unusable SDP answer: {e}") from None
    return Resource(urljoin(endpoint, location), body, resp_headers)


async def delete(http: aiohttp.ClientSession, resource: Resource, token: str | None = None) -> int:
    """End the session; returns the HTTP status (0 if the server is gone)."""
    try:
        async with http.delete(
            resource.url, headers=_auth(token), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        ) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0
