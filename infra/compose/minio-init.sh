#!/bin/sh
# One-shot MinIO setup (the `minio-init` service, image minio/mc), safe to re-run:
#   - the buckets biomedclip-data (DVC remote, shards, PMC mirror) and mlflow-artifacts
#     (MLflow's --artifacts-destination);
#   - a service user S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY with the readwrite policy, which
#     MLflow and the Prefect worker use instead of the MinIO root account.
# Credentials come from the environment and are never printed.
set -eu

: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is not set}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is not set}"
: "${S3_ACCESS_KEY_ID:?S3_ACCESS_KEY_ID is not set}"
: "${S3_SECRET_ACCESS_KEY:?S3_SECRET_ACCESS_KEY is not set}"

mc alias set local "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing local/biomedclip-data local/mlflow-artifacts

mc admin user add local "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY" >/dev/null
# (no grep in the mc image: match with the shell)
case "$(mc admin user info local "$S3_ACCESS_KEY_ID")" in
  *readwrite*) ;;
  *) mc admin policy attach local readwrite --user "$S3_ACCESS_KEY_ID" >/dev/null ;;
esac
echo "minio-init: buckets biomedclip-data, mlflow-artifacts and the service user are ready"
