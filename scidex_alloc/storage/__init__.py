"""The database: tables, migrations, connections, bulk inserts and shared SQL pieces."""
