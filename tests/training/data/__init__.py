"""Tests of training.data: schema, readers, validation, dataset, streaming, negatives."""
