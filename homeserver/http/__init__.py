"""HTTP foundation: routing, JSON in/out, Matrix errors, auth, rate limits, CORS, access log."""
