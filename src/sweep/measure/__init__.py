"""Timing, statistics, FLOP counting and memory: what a job measures."""
