"""Start MLflow's tracking server with basic auth, its stores on PostgreSQL and MinIO.

Runs as the `mlflow` service's command (`python /etc/biomedclip/mlflow_entrypoint.py`).
It renders the basic-auth ini from the environment into a private file (mode 0600), builds the
PostgreSQL URIs with the password URL-quoted, and execs `mlflow server`, so no secret appears
in the compose file, in `docker inspect`'s command line or in the log.

Environment (all required unless a default is shown):
  MLFLOW_DB_PASSWORD          password of the PostgreSQL role `mlflow`
  MLFLOW_DB_HOST              default postgres; MLFLOW_DB_PORT default 5432
  MLFLOW_ADMIN_USERNAME       the basic-auth admin, created on the first start
  MLFLOW_ADMIN_PASSWORD
  MLFLOW_DEFAULT_PERMISSION   default READ (READ, EDIT, MANAGE or NO_PERMISSIONS)
  MLFLOW_ARTIFACTS_DESTINATION  default s3://mlflow-artifacts
  MLFLOW_AUTH_CONFIG_PATH     where the ini is written, default /tmp/mlflow-auth/basic_auth.ini
  MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_S3_ENDPOINT_URL, AWS_*: read by MLflow itself

`--render-only` writes the ini and prints the server command (no secrets) without starting it.
"""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path
from urllib.parse import quote

DEFAULT_AUTH_CONFIG = "/tmp/mlflow-auth/basic_auth.ini"
AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def _required(env: dict[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SystemExit(f"mlflow_entrypoint: {name} is not set")
    return value


def postgres_uri(env: dict[str, str], database: str) -> str:
    password = quote(_required(env, "MLFLOW_DB_PASSWORD"), safe="")
    host, port = env.get("MLFLOW_DB_HOST", "postgres"), env.get("MLFLOW_DB_PORT", "5432")
    return f"postgresql://mlflow:{password}@{host}:{port}/{database}"


def render_auth_config(env: dict[str, str], path: Path) -> None:
    """The basic-auth ini MLflow reads through MLFLOW_AUTH_CONFIG_PATH."""
    # MLflow reads the file with ConfigParser's default (%-)interpolation: escape every '%'.
    values = {
        "default_permission": env.get("MLFLOW_DEFAULT_PERMISSION", "READ"),
        "database_uri": postgres_uri(env, "mlflow_auth"),
        "admin_username": _required(env, "MLFLOW_ADMIN_USERNAME"),
        "admin_password": _required(env, "MLFLOW_ADMIN_PASSWORD"),
        "authorization_function": AUTHORIZATION_FUNCTION,
    }
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        config.write(handle)


def server_command(env: dict[str, str]) -> list[str]:
    return ["mlflow", "server", "--app-name", "basic-auth",
            "--artifacts-destination", env.get("MLFLOW_ARTIFACTS_DESTINATION", "s3://mlflow-artifacts"),
            "--host", "0.0.0.0", "--port", env.get("MLFLOW_PORT", "5000")]


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    auth_config = Path(env.get("MLFLOW_AUTH_CONFIG_PATH") or DEFAULT_AUTH_CONFIG)
    render_auth_config(env, auth_config)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    # `mlflow server` reads --backend-store-uri from this variable: the password stays off argv.
    env["MLFLOW_BACKEND_STORE_URI"] = postgres_uri(env, "mlflow")
    command = server_command(env)
    if "--render-only" in argv:
        print(" ".join(command))
        return 0
    os.execvpe(command[0], command, env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
