"""Faults under load: Redis outages, reloads, shutdown, killed training, soak."""
