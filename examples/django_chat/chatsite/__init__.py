"""The Django chat example's project package."""
