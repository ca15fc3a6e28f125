"""The service's CLI verbs (``serve``, ``features load``): parse arguments, call the package."""
