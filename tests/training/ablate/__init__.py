"""Tests of training.ablate: variants and the ablation report."""
