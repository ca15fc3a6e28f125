"""Tests of service.feature_store against a real Redis."""
