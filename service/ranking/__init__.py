"""Ranking: the serving stages (two-tower, MLP), the ranker that runs them as a cascade,
request-value checks and step timing."""
