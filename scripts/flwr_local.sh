#!/usr/bin/env bash
# `flwr run .` on a local simulation federation, end to end:
#   scripts/flwr_local.sh ["hydra overrides ..."]
# e.g. scripts/flwr_local.sh "strategy=multi_link communication.channel_usage=2 users.count=4"
# A sweep in Hydra's syntax ("communication.channel_usage=1,2 seed=27,42") runs as one Flower
# run: its points go to <output>/points/<key>/, listed in <output>/points.csv.
#
# Validates the config and warms the zoo cache first (so users do not train encoders inside
# Ray), starts the run with experiment.supernodes SuperNodes (one per user up to 64) and 1 CPU
# each, follows its log, reads the run's real final status (`flwr run --stream` exits 0 even
# when a run fails), writes the tables under outputs/flwr/<timestamp>/ and stops the SuperLink
# it started.
set -euo pipefail
cd "$(dirname "$0")/.."
OVERRIDES="${1:-}"
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"
export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr}"
eval "$($PY -m launch.environment)"  # the quiet Flower/Ray variables, defined once
mkdir -p "$FLWR_HOME"
[ -f "$FLWR_HOME/config.toml" ] || cat > "$FLWR_HOME/config.toml" <<'TOML'
[superlink]
default = "local"

[superlink.local]
address = ":local:"
TOML

NODES=$($PY - "$OVERRIDES" <<'PYEOF'
import contextlib
import sys
from common.run.settings import ConfigError
from conf import sweep_points
from launch.sweeps import warm_sweep_assets
try:
    points = [settings for _, settings in sweep_points(sys.argv[1])]
except ConfigError as exc:
    sys.exit(f"error: {exc}")
with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the SuperNode count
    warm_sweep_assets(points)
from launch.simulation import supernodes
print(supernodes(points))  # experiment.supernodes: node p serves users p, p + nodes, ...
PYEOF
)
OUT="$PWD/outputs/flwr/$(date +%Y-%m-%d_%H-%M-%S)"
mkdir -p "$OUT"
LOG="$OUT/flwr_run.log"
superlink_pid() { pgrep -f -- "--log-file $FLWR_HOME/local-superlink/superlink.log" || true; }
STARTED_HERE=0
[ -n "$(superlink_pid)" ] || STARTED_HERE=1
cleanup() {
  if [ "$STARTED_HERE" = 1 ]; then
    pid=$(superlink_pid)
    [ -z "$pid" ] || kill -TERM $pid
  fi
}
trap cleanup EXIT

# a TOML file carries any override string (Flower's inline syntax cannot carry a quote)
RUN_CONFIG="$OUT/run_config.toml"
$PY -c 'import sys; from pathlib import Path; from launch.federation import write_run_config
write_run_config(Path(sys.argv[1]), {"overrides": sys.argv[2], "output-dir": sys.argv[3]})' \
  "$RUN_CONFIG" "$OVERRIDES" "$OUT"
flwr run . local --stream \
  --federation-config "num-supernodes=$NODES client-resources-num-cpus=1 client-resources-num-gpus=0" \
  --run-config "$RUN_CONFIG" 2>&1 | tee "$LOG"

RUN_ID=$(grep -oP "Successfully started run \K[0-9]+" "$LOG" || true)
[ -n "$RUN_ID" ] || { echo "error: the run did not start (see $LOG)"; exit 1; }
STATUS=$(flwr ls local --run-id "$RUN_ID" --format json \
  | $PY -c "import json,sys; r=json.load(sys.stdin)['runs'][0]; print(r['status'])")
echo "run $RUN_ID: $STATUS"
[ "$STATUS" = "finished:completed" ] || { echo "error: run $RUN_ID did not complete"; exit 1; }
