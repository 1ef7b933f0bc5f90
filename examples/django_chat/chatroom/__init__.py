"""The chat app: rooms where each message shows its sender's username."""
