"""Ephemeral data that is not part of a room's event graph: typing, receipts and presence."""
