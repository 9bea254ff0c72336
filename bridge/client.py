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
# The relation of the ``Link`` header on a WHEP answer whose participant shares its identity
# (``identity_share``): the viewer GETs it with the same token it watches with.
IDENTITY_REL = "likeness-identity"


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


def identity_url(resource: Resource) -> str | None:
    """Where a WHEP answer says its participant's shared identity is (its ``Link`` of relation
    ``IDENTITY_REL``), as an absolute URL; None when it advertises none."""
    for link in resource.headers.get("Link", "").split(","):
        target, _, params = link.partition(";")
        rels = {p.strip().removeprefix("rel=").strip('"') for p in params.split(";") if p.strip().startswith("rel=")}
        if IDENTITY_REL in rels and target.strip().startswith("<") and target.strip().endswith(">"):
            return urljoin(resource.url, target.strip()[1:-1])
    return None


async def fetch_identity(http: aiohttp.ClientSession, url: str, token: str | None, limit: int) -> bytes | None:
    """The identity bytes shared at ``url`` (None on 404: not shared, or its publisher left), read
    into memory only and at most ``limit`` bytes; anything else is a ``WhipError``."""
    try:
        async with http.get(url, headers=_auth(token), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise WhipError(f"{url}: HTTP {resp.status} {(await resp.text()).strip()[:200]}")
            body = b""  # read(n) gives what has arrived so far, not the whole body: read to the end
            while len(body) <= limit and (chunk := await resp.content.read(limit + 1 - len(body))):
                body += chunk
    except (aiohttp.ClientError, TimeoutError) as e:
        raise WhipError(f"{url}: {type(e).__name__} {e}".strip()) from None
    if len(body) > limit:
        raise WhipError(f"{url}: shared identity larger than {limit} bytes")
    return body


async def put_identity(http: aiohttp.ClientSession, resource: Resource, data: bytes, token: str | None) -> None:
    """Share an identity (the store's file bytes) with the viewers of a WHIP session's room."""
    url = resource.url.rstrip("/") + "/identity"
    headers = {"Content-Type": "application/octet-stream", **_auth(token)}
    try:
        async with http.put(url, data=data, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as resp:
            if resp.status != 204:
                raise WhipError(f"{url} refused the identity: HTTP {resp.status} {(await resp.text()).strip()[:200]}")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise WhipError(f"{url}: {type(e).__name__} {e}".strip()) from None
