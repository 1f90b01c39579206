"""Team mode: a shared MLflow server with logins, backed by PostgreSQL, and a DVC remote."""
