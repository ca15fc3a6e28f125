"""HTTP routes and request/response models of the scoring service."""
