"""Storage: one database API over SQLite and PostgreSQL, migrations, one store per domain; SQL lives only here."""
