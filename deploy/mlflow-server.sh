#!/usr/bin/env bash
# A central MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (put a reverse proxy with
# authentication in front of it before exposing it to a network).
#   sudo apt-get install -y postgresql && pip install 'inference-sweep[postgres]'
#   sudo -u postgres createuser --pwprompt mlflow && sudo -u postgres createdb -O mlflow mlflow
#   MLFLOW_DB_PASSWORD=... bash deploy/mlflow-server.sh
# Then: SWEEP_MLFLOW_URI=http://127.0.0.1:5000 python -m sweep -m tracking=server ...
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (the mlflow role's password)}"
exec mlflow server \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "postgresql://mlflow:${MLFLOW_DB_PASSWORD}@127.0.0.1:5432/mlflow" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:-$HOME/mlflow-artifacts}" \
  --workers "${MLFLOW_WORKERS:-4}"
