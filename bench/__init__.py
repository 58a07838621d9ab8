"""Benchmarks that print figures; none of them is a pass/fail test."""
