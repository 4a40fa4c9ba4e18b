"""Model interfaces and their implementations: the same classes run in-process and inside Triton."""
