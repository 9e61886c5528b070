"""Benchmarks: the model's limit, the service under load, and the preprocessing evidence."""
