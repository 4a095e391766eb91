#!/usr/bin/env bash
# Checks docs/alerts.yml with Prometheus's promtool (from Debian's prometheus package, unpacked
# into a temporary folder, never installed) and runs its unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  apt-get update -qq
  (cd "$work" && apt-get download prometheus >/dev/null)
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
promtool="$work/root/usr/bin/promtool"
"$promtool" --version | head -1
"$promtool" check rules docs/alerts.yml
"$promtool" test rules tests/alerts/alerts_test.yml
# The dashboard's queries, with Grafana's variables filled in, must be valid PromQL too.
python3 - "$work/dashboard-rules.yml" <<'PY'
import json, sys
panels = json.load(open("docs/grafana-dashboard.json"))["panels"]
exprs = [t["expr"] for p in panels for t in p["targets"]]
assert exprs, "the dashboard has no queries"
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$job", ".*")
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"dashboard: {len(panels)} panels, {len(exprs)} queries")
PY
"$promtool" check rules "$work/dashboard-rules.yml"
