#!/usr/bin/env bash
# `make stack`: the production topology on this machine against the local PostgreSQL and Redis:
# 2 web processes behind one port, 2 Celery workers, beat and the live relay (deploy/Procfile).
# First run: creates the database, writes var/stack.env with fresh secrets, migrates and seeds
# the demo users and agents. Later runs reuse them. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
mkdir -p var
if [ ! -f var/stack.env ]; then
  "$VENV/bin/python" - > var/stack.env <<'PY'
import secrets
print("DATABASE_URL=postgres://postgres@127.0.0.1:5432/countersign_stack")
print("REDIS_URL=redis://127.0.0.1:6379/3")
print(f"SECRET_KEY={secrets.token_urlsafe(50)}")
print(f"AUDIT_CHAIN_KEY={secrets.token_urlsafe(32)}")
print("AUDIT_ANCHOR_FILE=var/stack-audit-anchors.log")
print("HTTPS=0")  # loopback: plain HTTP (put TLS in front for anything else, docs/production.md)
print("PORT=8000")
print("WEB_WORKERS=2")
PY
  echo "wrote var/stack.env (secrets for this machine's stack; keep it out of version control)"
fi
set -a
# shellcheck disable=SC1091
. var/stack.env
set +a
PATH="$PWD/$VENV/bin:$PATH"
db="${DATABASE_URL##*/}"
if ! psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE $db"
fi
python manage.py migrate --noinput -v0
python manage.py collectstatic --noinput -v0
python manage.py seed_demo
echo "Countersign (production topology) on http://127.0.0.1:$PORT/ — demo users as in the README"
exec honcho -f deploy/Procfile -d . start
