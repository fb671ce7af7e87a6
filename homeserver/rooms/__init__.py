"""Rooms: events (PDUs), authorization rules, state resolution and who can see what."""
