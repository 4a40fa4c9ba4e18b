"""Deployment artifacts generated from shared/topology.py: docker-compose.yml and k8s/."""
