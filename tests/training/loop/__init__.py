"""Tests of training.loop: the trainer, checkpoints and resume, distributed training."""
