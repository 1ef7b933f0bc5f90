"""A test app: handlers in ``sockets.py`` (autodiscovered) and in ``models.py``."""
