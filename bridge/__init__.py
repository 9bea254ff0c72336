"""WebRTC bridge: enhancing track, local server with rooms, WHIP/WHEP, `likeness call`."""
