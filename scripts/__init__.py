"""Developer scripts; importable (``python -m scripts.cluster``) from the repository root."""
