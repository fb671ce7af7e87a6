"""Server-side search (POST /search) and the user directory (POST /user_directory/search)."""
