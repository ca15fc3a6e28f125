"""Malformed requests and training inputs: clear errors, no tracebacks."""
