"""Deployment files: compose, Dockerfiles, Kubernetes manifests."""
