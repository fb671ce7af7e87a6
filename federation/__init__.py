"""Server-server API: incoming requests, outgoing client, queues, PDU checks (the federation issue)."""
