"""Cross-cutting suites that exercise the whole system from one angle."""
