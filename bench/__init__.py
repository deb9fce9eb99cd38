"""Benchmark scripts: each prints one table (see docs/performance.md)."""
