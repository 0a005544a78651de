#!/usr/bin/env bash
# One-machine trial of a whole study from the images (deploy/compose.yaml): demo cohort, certificates, site
# keys, registration, approvals, then SuperLink + MLflow + three sites, and one study run. Results in MLflow at
# http://127.0.0.1:5000. Stop with: docker compose -f deploy/compose.yaml down (add -v to forget everything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if docker compose version >/dev/null 2>&1; then compose=(docker compose -f compose.yaml)
elif command -v docker-compose >/dev/null; then compose=(docker-compose -f compose.yaml)
else echo "trial.sh: needs 'docker compose' (v2) or docker-compose" >&2; exit 2; fi

tools=("${compose[@]}" run --rm --no-deps coordinator-tools)
"${tools[@]}" demo-cohort /data --sites 3 --cases-per-site 40
"${tools[@]}" certs /work/certs --host superlink
for site in site-a site-b site-c; do
    "${compose[@]}" run --rm --no-deps "$site" keygen --out /keys --name "$site"
    "${compose[@]}" run --rm --no-deps "$site" approve /study/demo_study.yaml --work-dir /work
done
"${compose[@]}" up -d mlflow superlink
# register-site talks to the running SuperLink
for _ in $(seq 60); do "${compose[@]}" exec -T superlink coordinator status --state-dir /work >/dev/null 2>&1 && break; sleep 2; done
for site in site-a site-b site-c; do
    "${compose[@]}" exec -T superlink coordinator register-site "$site" "/keys/$site.pub" --state-dir /work
done
"${compose[@]}" up -d site-a site-b site-c
"${compose[@]}" exec -T superlink coordinator run --protocol /study/demo_study.yaml --state-dir /work \
    --wait-for 3 --mlflow-uri http://mlflow:5000
echo "results: http://127.0.0.1:5000 (MLflow)"
