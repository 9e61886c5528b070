"""Cross-cutting concerns: authentication, logging, request ids."""
