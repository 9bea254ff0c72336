"""Benchmark infrastructure: real clips, stamped tracks, a bridge on a free port, shaped links."""
