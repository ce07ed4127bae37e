#!/usr/bin/env bash
# Create a kind cluster, build and load the image, install the chart with the dev Kafka and the demo nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-resonance}
IMAGE=${IMAGE:-resonance:dev}
HELM=${HELM:-helm}

missing=()
for tool in docker kind kubectl "$HELM"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind-up: missing: ${missing[*]} (install them, or run 'make tools' for helm and set HELM=.tools/bin/helm)" >&2
  exit 1
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml --wait 120s
fi
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"
"$HELM" upgrade --install resonance charts/resonance --namespace resonance --create-namespace \
  --kube-context "kind-$CLUSTER" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set kafka.dev.enabled=true --set demo.enabled=true --wait --timeout 5m
echo "kind-up: installed; next: make kind-e2e"
