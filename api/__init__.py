"""The meterwatch HTTP API: `api.main.create_app()` builds it, `api.main.serve()` runs it."""
