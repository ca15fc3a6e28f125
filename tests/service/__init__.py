"""Tests of the service package: the deployed process, hot reload, train/serve parity."""
