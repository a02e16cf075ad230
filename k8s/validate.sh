#!/usr/bin/env bash
# Static half of `make k8s-validate`: render every kustomize overlay, validate the output
# against the Kubernetes schemas (strict), check it against k8s/check-policy.py, and check
# the Prometheus configs, rules and rule unit tests and the Grafana dashboard's JSON.
# KUBECTL picks the kubectl (default: kubectl on PATH; Debian's 1.20 and current ones work).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL=${KUBECTL:-kubectl}
K8S_VERSION=${K8S_VERSION:-1.32.0}
for tool in "$KUBECTL" kubernetes-validate promtool nats-server python3; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "k8s-validate: $tool is missing: run deploy/install-deps.sh" >&2
    exit 1
  }
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== kustomize ($("$KUBECTL" version --client 2>/dev/null | head -1))"
for dir in k8s/overlays/dev k8s/overlays/prod k8s/optional/servicemonitor; do
  rendered="$out/$(echo "$dir" | tr / -).yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$rendered" 2>"$out/err"; then
    echo "k8s-validate: $dir does not render:" >&2
    cat "$out/err" >&2
    exit 1
  fi
  echo "$dir: $(grep -c '^kind:' "$rendered") objects"
  # Strict: unknown fields are errors. CRDs (ServiceMonitor) have no schema: a warning.
  kubernetes-validate --strict -k "$K8S_VERSION" --quiet "$rendered"
done
python3 k8s/check-policy.py "$out"/k8s-overlays-dev.yaml "$out"/k8s-overlays-prod.yaml

echo "== nats-server configuration"
for conf in k8s/base/nats.conf k8s/overlays/dev/nats.conf; do
  POD_NAME=nats-0 NATS_PASSWORD=validate nats-server -t -c "$conf"
done

echo "== prometheus"
promtool check config deploy/prometheus/prometheus.yml
if ! promtool check config deploy/prometheus/prometheus-kubernetes.yml >"$out/err" 2>&1; then
  if grep -q 'kubernetes_sd_configs not found' "$out/err"; then
    # Debian builds Prometheus without Kubernetes discovery: check everything else (the
    # relabelling included) with the discovery swapped for an equivalent file_sd.
    echo "promtool here has no kubernetes_sd: checking prometheus-kubernetes.yml with file_sd in its place"
    echo '[]' >"$out/targets.json"
    mkdir -p "$out/rules" && cp deploy/prometheus/rules/*.rules.yml "$out/rules/"
    sed -e 's/^    kubernetes_sd_configs:$/    file_sd_configs:/' \
        -e "s#^      - role: pod\$#      - files: [\"$out/targets.json\"]#" \
        deploy/prometheus/prometheus-kubernetes.yml >"$out/prometheus-kubernetes.yml"
    grep -q 'file_sd_configs' "$out/prometheus-kubernetes.yml" || { echo "substitution failed" >&2; exit 1; }
    promtool check config "$out/prometheus-kubernetes.yml"
  else
    cat "$out/err" >&2
    exit 1
  fi
else
  cat "$out/err"
fi
promtool check rules deploy/prometheus/rules/*.rules.yml
promtool test rules deploy/prometheus/rules/tests/*.test.yml

echo "== grafana"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("%s: %d panels" % (sys.argv[1], len(d["panels"])))' deploy/grafana/mabeam-dashboard.json
echo "k8s-validate: static checks passed"
