"""Tests of the models package: nn.Modules and the joint model."""
