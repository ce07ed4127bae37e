#!/usr/bin/env bash
# On the kind cluster of kind-up: both demo nodes Ready, a message reaches a node, heartbeats reach Kafka.
set -euo pipefail
CLUSTER=${KIND_CLUSTER:-resonance}
NS=resonance
K=(kubectl --context "kind-$CLUSTER" -n "$NS")

fail() {
  echo "kind-e2e: $*" >&2
  "${K[@]}" get resonancenodes,deployments,pods -o wide >&2 || true
  "${K[@]}" describe resonancenodes >&2 || true
  "${K[@]}" logs deployment/resonance-operator --tail=50 >&2 || true
  exit 1
}

for node in lexamoris nexus; do
  "${K[@]}" wait --for=condition=Ready "resonancenode/$node" --timeout=300s || fail "$node is not Ready"
done
echo "kind-e2e: both nodes Ready"

KAFKA=resonance-kafka.$NS.svc:9092
"${K[@]}" run resonance-send --rm -i --restart=Never --image="${IMAGE:-resonance:dev}" --image-pull-policy=Never \
  --env="KAFKA_BOOTSTRAP_SERVERS=$KAFKA" --command -- resonance send --topic resonance.lexamoris --type state \
  --message kind-e2e || fail "resonance send failed"

for _ in $(seq 1 30); do
  if "${K[@]}" logs deployment/lexamoris-server | grep -q "kind-e2e"; then
    echo "kind-e2e: lexamoris received the message"
    break
  fi
  sleep 2
done
"${K[@]}" logs deployment/lexamoris-server | grep -q "kind-e2e" || fail "lexamoris never printed the message"

"${K[@]}" run resonance-tail --rm -i --restart=Never --image="${IMAGE:-resonance:dev}" --image-pull-policy=Never \
  --env="KAFKA_BOOTSTRAP_SERVERS=$KAFKA" --command -- resonance tail resonance.heartbeats --from-beginning \
  --count 1 --timeout 60 | grep -q '"type": "heartbeat"' || fail "no heartbeat in resonance.heartbeats"
echo "kind-e2e: heartbeats reach resonance.heartbeats; all good"
