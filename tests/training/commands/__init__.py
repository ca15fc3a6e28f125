"""Tests of the training CLI verbs through the real dispatcher."""
