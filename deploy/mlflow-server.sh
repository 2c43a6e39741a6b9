#!/usr/bin/env bash
# A central MLflow tracking server on PostgreSQL, bound to 127.0.0.1 (put a reverse proxy with
# authentication in front of it before exposing it to a network).
#   sudo apt-get install -y postgresql && pip install 'inference-sweep[postgres]'
#   sudo -u postgres createuser --pwprompt mlflow && sudo -u postgres createdb -O mlflow mlflow
#   install -m 600 /dev/null ~/.mlflow-db-password && echo '...' > ~/.mlflow-db-password
#   bash deploy/mlflow-server.sh        (or MLFLOW_DB_PASSWORD=... in this process's environment)
# Then: SWEEP_MLFLOW_URI=http://127.0.0.1:5000 python -m sweep -m tracking=server ...
# The password reaches PostgreSQL's client library through PGPASSWORD in the server process's
# environment only: never on a command line (which `ps` shows to every user) nor in the URI.
set -euo pipefail
file=${MLFLOW_DB_PASSWORD_FILE:-$HOME/.mlflow-db-password}
if [ -z "${MLFLOW_DB_PASSWORD:-}" ]; then
  [ -r "$file" ] || { echo "put the mlflow role's password in $file (mode 600), or set" \
    "MLFLOW_DB_PASSWORD_FILE or MLFLOW_DB_PASSWORD" >&2; exit 2; }
  MLFLOW_DB_PASSWORD=$(<"$file")
fi
export PGPASSWORD=$MLFLOW_DB_PASSWORD
unset MLFLOW_DB_PASSWORD
exec mlflow server \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "postgresql://mlflow@${MLFLOW_DB_HOST:-127.0.0.1}:5432/mlflow" \
  --artifacts-destination "${MLFLOW_ARTIFACTS:-$HOME/mlflow-artifacts}" \
  --workers "${MLFLOW_WORKERS:-4}"
