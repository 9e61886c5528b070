"""imgclass: an image-classification service with a built-in analytics warehouse."""

__version__ = "0.1.0"
