"""What ``likeness serve`` can set, and the check that refuses unsafe or impossible settings.

Checked once, before anything listens, so a bad setting is a one-line error at start-up
rather than a failure on the first call.
"""

from __future__ import annotations

from dataclasses import dataclass

from enhancer.errors import LikenessError

from .codecs import CODECS
from .ice import ice_server, is_loopback_host
from .identities import valid_name
from .pairing import check_code

FANOUTS = ("shared", "per-viewer")
FRAME_RELEASES = ("marker", "aiortc")


@dataclass(frozen=True)
class BridgeConfig:
    """Everything ``likeness serve`` can set."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    ice_servers: tuple[str, ...] = ()
    codec: str | None = None  # "vp8" | "h264" | None (first codec the peer offers)
    bitrate: int | None = None  # bit/s ceiling of each outgoing video stream
    identity: str | None = None  # default identity for publishers that do not pick one
    deadline_frames: float = 1.5
    # a stream received from another bridge and restored here (``likeness view``, the page's watch mode)
    # must add at most ~40 ms on top of what the plain receiver shows: this deadline, plus the extra
    # decode, encode and local hop (~6 / 8 ms p50 / p95 measured with no restoration: docs/receiver.md)
    view_deadline_ms: float = 25.0
    max_body_bytes: int = 24 * 1024 * 1024  # enrolment uploads; SDP is capped separately
    max_enroll_images: int = 32
    max_sessions: int = 24  # publishers + viewers; each costs a pipeline, or a sender (and, per-viewer, an encoder)
    # ICE host candidates: "only" 127.0.0.1 | "add" it to the machine's addresses | "off" (the
    # machine's addresses only); None: "only" on a loopback host (a bridge bound to 127.0.0.1 is
    # for this machine, so it should not announce the machine's network addresses), else "off"
    loopback_ice: str | None = None
    # a connected publisher that sends no video for this long is closed (0: never). Without it a
    # killed or unplugged sender is noticed only by ICE consent expiry, ~30 s of frozen video for
    # its viewers; browsers keep sending (black) frames while a camera is muted, so silence is death.
    # Viewers likewise: one whose RTCP receiver reports (sent every ~1 s while video arrives) stop
    # for this long is gone, and closing it stops sending (and encoding, if it was the last) for nobody.
    media_idle_s: float = 8.0
    # "shared": one encoder per publisher and codec feeds all its viewers (an SFU's one encoding);
    # "per-viewer": aiortc's default, an encoder per viewer (each at its own REMB bitrate)
    fanout: str = "shared"
    # "marker": an incoming video frame goes to the decoder when its last (RTP-marked) packet
    # arrives; "aiortc": when the next frame's first packet does (aiortc's rule, one frame later)
    frame_release: str = "marker"
    # the code the browser extension must send on every /ext/ request (``pairing``). `likeness serve`
    # passes the stored one (``pairing.serve_pairing_code``: made once, kept in the home folder);
    # None, for an app built in code: a throwaway one per app (``server.create_app``)
    pairing_code: str | None = None
    pairing_note: str = ""  # printed after the code: where it came from, whether to pair again
    # a room of another bridge received for the page (``remote_view``) that nobody here has watched
    # for this long is let go (a closed tab sends no DELETE), so it stops pulling the other bridge
    view_unwatched_s: float = 30.0

    @property
    def loopback(self) -> str:
        """How ICE treats 127.0.0.1 (see ``ice.enable_loopback_candidates``)."""
        if self.loopback_ice is not None:
            return self.loopback_ice
        return "only" if is_loopback_host(self.host) else "off"


def check_config(config: BridgeConfig) -> None:
    """Refuse unsafe or impossible settings with a one-line error."""
    if not is_loopback_host(config.host) and not config.token:
        raise LikenessError(f"refusing to bind {config.host} without a token: pass --token (or bind 127.0.0.1)")
    if config.codec is not None and config.codec not in CODECS:
        raise LikenessError(f"unknown codec {config.codec!r}: choose one of {', '.join(CODECS)}")
    if config.identity is not None and not valid_name(config.identity):
        raise LikenessError(f"invalid identity name {config.identity!r}")
    if config.token is not None and len(config.token) < 8:
        raise LikenessError("token too short: use at least 8 characters")
    if config.frame_release not in FRAME_RELEASES:
        raise LikenessError(f"frame_release must be one of {', '.join(FRAME_RELEASES)}, got {config.frame_release!r}")
    if config.fanout not in FANOUTS:
        raise LikenessError(f"fanout must be one of {', '.join(FANOUTS)}, got {config.fanout!r}")
    if config.media_idle_s < 0:
        raise LikenessError("media_idle_s must be >= 0 (0 turns the idle watch off)")
    if config.deadline_frames <= 0 or config.view_deadline_ms <= 0:
        raise LikenessError("deadline_frames and view_deadline_ms must be > 0")
    if config.view_unwatched_s <= 0:
        raise LikenessError("view_unwatched_s must be > 0")
    if config.loopback not in ("only", "add", "off"):
        raise LikenessError(f"loopback_ice must be 'only', 'add' or 'off', got {config.loopback!r}")
    if config.pairing_code is not None and (why := check_code(config.pairing_code)) is not None:
        raise LikenessError(why)
    for url in config.ice_servers:
        try:
            ice_server(url)
        except ValueError as e:
            raise LikenessError(str(e)) from None
