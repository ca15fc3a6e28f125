"""Tests of service.ranking: stages and caches."""
