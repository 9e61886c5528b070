"""Warehouse: the star schema, writing events into it, and user accounts. No Flask, no model."""
