"""Tests of models.contract: artifact format, vocabularies, model repository."""
