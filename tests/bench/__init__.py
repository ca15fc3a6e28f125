"""Tests of the benchmark harness: what each measurement computes, never how fast."""
