"""Flower glue on the coordinator side: ServerApp, Grid transport, SuperLink, certificates, flwr CLI."""
