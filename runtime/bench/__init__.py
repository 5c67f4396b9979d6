"""Benchmarks behind `asyncinf bench`: the transports against their floors, and end to end."""
