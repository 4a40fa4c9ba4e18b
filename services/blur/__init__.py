"""The blur service."""
