#!/usr/bin/env bash
# A secure Flower federation on this machine, to try deployment before using several machines:
#   scripts/federation.sh up [hydra overrides ...]      e.g. up users.count=3
#   scripts/federation.sh run "hydra overrides" OUTPUT  e.g. run "experiment.rounds=10" outputs/dep
#   scripts/federation.sh down                          stops every process `up` started
# TLS (a CA and server certificate for 127.0.0.1) and SuperNode authentication (a registered
# key pair per device) are on; each device builds its own assets. State: .federation/
# (set FEDERATION_DIR / FEDERATION_PORT to change). docs/DEPLOYMENT.md has the same steps
# for separate machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
ARGS=(--folder "${FEDERATION_DIR:-.federation}" --port "${FEDERATION_PORT:-8000}")
case "${1:-}" in
  up) shift; exec $PY -m launch.federation "${ARGS[@]}" up "$@" ;;
  run) [ $# -ge 3 ] || { echo "usage: $0 run \"overrides\" OUTPUT_DIR" >&2; exit 2; }
       exec $PY -m launch.federation "${ARGS[@]}" run "$2" --output "$3" ;;
  down) exec $PY -m launch.federation "${ARGS[@]}" down ;;
  *) echo "usage: $0 up [overrides ...] | run \"overrides\" OUTPUT_DIR | down" >&2; exit 2 ;;
esac
