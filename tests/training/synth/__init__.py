"""Tests of training.synth: the synthetic generator and its files on disk."""
