"""Deployment artifacts generated from winnow/ops/topology.py: docker-compose.yml and k8s/."""
