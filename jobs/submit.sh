#!/usr/bin/env bash
# Submit a rayflow pipeline to a running Ray cluster (needs ray[default] on this machine).
#   RAY_ADDRESS=http://head:8265 jobs/submit.sh run --config demo --set output_dir=/mnt/shared/rayflow
# On a multi-node cluster, output_dir must be shared storage (NFS, or a mounted bucket).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the dashboard address of the cluster, e.g. http://127.0.0.1:8265}"
# The jobs CLI sends a token only in token mode, and needs one then; the cluster decides which. A plain
# `ray start --head` on a machine with no token runs without auth, one started with a token (or a
# cluster.yaml / KubeRay cluster) with it, so unless RAY_AUTH_MODE is set, ask the cluster.
if [ -z "${RAY_AUTH_MODE:-}" ]; then
  RAY_AUTH_MODE="$(python3 - "$RAY_ADDRESS" <<'PY'
import json, sys, urllib.request
url = sys.argv[1].rstrip("/")
url = url if "://" in url else f"http://{url}"
try:
    with urllib.request.urlopen(f"{url}/api/authentication_mode", timeout=10) as r:
        print(json.load(r).get("authentication_mode", "disabled"))
except Exception as e:  # noqa: BLE001 - the jobs CLI then reports the unreachable address itself
    print(f"jobs/submit.sh: could not ask {url} for its auth mode ({e}); assuming none", file=sys.stderr)
    print("disabled")
PY
)"
  export RAY_AUTH_MODE
fi
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] \
   && [ ! -s "$HOME/.ray/auth_token" ]; then
  echo "jobs/submit.sh: the cluster at $RAY_ADDRESS uses token auth and this machine has no token:" \
       "set RAY_AUTH_TOKEN (on the head: ray get-auth-token) or copy it to ~/.ray/auth_token" >&2
  exit 2
fi
exec ray job submit --address "$RAY_ADDRESS" --runtime-env jobs/runtime_env.yaml -- python -m rayflow "$@"
