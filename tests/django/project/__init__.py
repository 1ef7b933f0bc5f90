"""A minimal Django project for the adapter's tests (SQLite)."""
