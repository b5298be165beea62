#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (/docker-entrypoint-initdb.d). Creates the service roles and their databases:
#   role mlflow  -> databases mlflow (tracking + registry) and mlflow_auth (basic-auth users)
#   role prefect -> database prefect
# Passwords come from the container environment (MLFLOW_DB_PASSWORD, PREFECT_DB_PASSWORD) and
# reach PostgreSQL as psql variables (:'var' quoting), never through the shell or the log.
# To change a password later: ALTER ROLE ... PASSWORD ... (this script does not run again).
# The image's entrypoint sources a non-executable script into its own shell: no `set -u` here.
set -e

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD is not set}"

psql --set ON_ERROR_STOP=1 --no-psqlrc --quiet \
     --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
     --set mlflow_password="$MLFLOW_DB_PASSWORD" \
     --set prefect_password="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
REVOKE ALL ON DATABASE mlflow, mlflow_auth, prefect FROM PUBLIC;
SQL

# PostgreSQL 15 no longer lets every role create objects in `public`: give each owner its schema.
for db in mlflow mlflow_auth; do
  psql --set ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
       --dbname "$db" --command 'ALTER SCHEMA public OWNER TO mlflow;'
done
psql --set ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
     --dbname prefect --command 'ALTER SCHEMA public OWNER TO prefect;'
