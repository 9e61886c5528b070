"""HTTP layer: parse requests, call services, shape JSON. One module per area; no SQL here."""
