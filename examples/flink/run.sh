#!/usr/bin/env bash
# The whole pipeline: a Lockstep job waiting for 2 producers, then the PyFlink job that feeds it.
#   PYTHON=/path/to/venv/bin/python examples/flink/run.sh
# PYTHON must have apache-flink 2.3 and lockstep-client (pip install apache-flink==2.3.0 ./python).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
LOCKSTEP=${LOCKSTEP:-target/release/lockstep}
RUN=${RUN_DIR:-runs/flink}
export LOCKSTEP_TOKEN=${LOCKSTEP_TOKEN:-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}
rm -rf "$RUN"
mkdir -p "$RUN"
"$LOCKSTEP" launch examples/flink/credit.toml --run-dir "$RUN" &
JOB=$!
trap 'kill $JOB 2>/dev/null || true' EXIT
"$PYTHON" examples/flink/pipeline.py --run-dir "$RUN" --data examples/data/credit_data.parquet
wait $JOB
trap - EXIT
"$PYTHON" - "$RUN/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["stream"]
print(json.dumps({"rounds": r["rounds"], "rows_trained": s["rows_trained"],
                  "prequential": s["prequential"], "held_out": r["eval"],
                  "weights_sha256": r["weights_sha256"]}, indent=1))
PY
