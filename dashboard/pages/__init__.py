"""The dashboard's pages, one module each, found by Dash (`use_pages=True`)."""
