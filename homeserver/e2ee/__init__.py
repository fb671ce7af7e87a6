"""End-to-end encryption: device and one-time keys, cross-signing, device-list tracking."""
