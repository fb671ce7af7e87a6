"""Pure cryptographic helpers for federation-grade Matrix events."""
