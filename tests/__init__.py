"""Tests: folders mirror the packages (models, training, service, bench), plus suites."""
