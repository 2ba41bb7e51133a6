"""The HTTP API: one Klein app (app.py) composed of one module per resource."""
