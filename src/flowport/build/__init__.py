"""Artifacts built from a flow or a deployment: container build contexts and Kubernetes manifests."""
