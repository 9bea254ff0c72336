"""Helpers that only tests use: waiting, leak checks, CPU contention, RTP loss, enhancement checks,
constructed crops."""
