"""Shared test helpers: tiny data, runs, artifacts, servers, processes (never collected)."""
