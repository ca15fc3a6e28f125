"""Tests of training.export: export, graph formats, parity with eager."""
