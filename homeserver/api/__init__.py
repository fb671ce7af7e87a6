"""HTTP APIs: client-server (client/) and Synapse-compatible admin (admin/)."""
