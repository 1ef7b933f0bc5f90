"""Migrations of the chat app."""
