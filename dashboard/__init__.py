"""The meterwatch live dashboard: `dashboard.app.create_dash_app()` builds it,
`dashboard.app.serve()` runs it. It reads everything through the API."""
