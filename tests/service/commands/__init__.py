"""Tests of the service CLI verbs (serve, features)."""
