#!/usr/bin/env bash
# Submit a rayflow pipeline to a running Ray cluster (needs ray[default] on this machine).
#   RAY_ADDRESS=http://head:8265 jobs/submit.sh run --config demo --set output_dir=/mnt/shared/rayflow
# On a multi-node cluster, output_dir must be shared storage (NFS, or a mounted bucket).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard address of the cluster, e.g. http://127.0.0.1:8265}"
# Ray 2.60 enables token auth on `ray start`; the jobs CLI sends ~/.ray/auth_token only in token mode.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
exec ray job submit --address "$RAY_ADDRESS" --runtime-env jobs/runtime_env.yaml -- python -m rayflow "$@"
