#!/usr/bin/env bash
# End to end on a real Kubernetes (kind): build both images, load them into a kind
# cluster, `helm install` the chart, `helm test` it, then train the example LMTrainingJob
# to success and serve it with the example LMService until it is Ready.
#
#   tests/e2e/kind/run.sh            # needs docker, kind, kubectl and helm on PATH
#
# KIND_CLUSTER (default elasticlm-e2e) names the cluster; KEEP_CLUSTER=1 keeps it
# afterwards (it is deleted otherwise, also on failure); IMAGE_TAG (default e2e).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CLUSTER=${KIND_CLUSTER:-elasticlm-e2e}
TAG=${IMAGE_TAG:-e2e}
NS=elasticlm-system
USERNS=${E2E_NAMESPACE:-default}
EXAMPLES="$ROOT/manifests/examples"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not on PATH" >&2; exit 2; }
done

step() { printf '\n==> %s\n' "$*"; }

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    step "failed ($status): what the cluster shows"
    kubectl get lmtj,lms,pods,pvc -A -o wide || true
    kubectl -n "$NS" logs deployment/elasticlm-operator --tail=100 || true
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" || true; fi
  exit "$status"
}

step "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
trap cleanup EXIT
kubectl config use-context "kind-$CLUSTER"

step "images elasticlm/operator:$TAG and elasticlm/worker:$TAG"
make -C "$ROOT" images IMAGE_REGISTRY=elasticlm IMAGE_TAG="$TAG"
kind load docker-image --name "$CLUSTER" "elasticlm/operator:$TAG" "elasticlm/worker:$TAG"

step "helm install"
helm install elasticlm "$ROOT/charts/elasticlm" --namespace "$NS" --create-namespace \
  --wait --timeout 5m \
  --set image.repository=elasticlm/operator --set image.tag="$TAG" \
  --set image.pullPolicy=Never \
  --set workerDefaults.image.repository=elasticlm/worker \
  --set workerDefaults.image.tag="$TAG" --set workerDefaults.imagePullPolicy=Never \
  --set serverDefaults.image.repository=elasticlm/worker \
  --set serverDefaults.image.tag="$TAG" --set serverDefaults.imagePullPolicy=Never
helm test elasticlm --namespace "$NS" --timeout 3m

step "the example job's claims and a synthetic corpus"
# The README's data example, in the image loaded above.
sed -e "s|image: ghcr.io/elasticlm/worker:.*|image: elasticlm/worker:$TAG\n          imagePullPolicy: Never|" \
  "$EXAMPLES/data/tiny-lm.yaml" | kubectl -n "$USERNS" apply -f -
kubectl -n "$USERNS" wait job/tiny-lm-corpus --for=condition=Complete --timeout=5m

step "train the example LMTrainingJob"
kubectl -n "$USERNS" apply -f "$EXAMPLES/training-job.yaml"
kubectl -n "$USERNS" wait lmtj/tiny-lm --for=jsonpath='{.status.phase}'=Succeeded --timeout=30m

step "serve it with the example LMService"
kubectl -n "$USERNS" apply -f "$EXAMPLES/service.yaml"
kubectl -n "$USERNS" wait lms/tiny-lm --for=condition=Ready --timeout=10m
kubectl -n "$USERNS" get lmtj,lms

step "passed"
