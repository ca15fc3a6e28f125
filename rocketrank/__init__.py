"""rocketrank: the ``rocketrank`` command (a thin dispatcher over training and service)."""

__version__ = "0.1.0"
