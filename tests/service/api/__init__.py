"""Tests of service.api: the HTTP endpoints through TestClient."""
