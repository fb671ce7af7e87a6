"""Sync: stream tokens, the notifier that wakes long-polls, filters, and the /sync handler."""
