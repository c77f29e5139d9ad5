# Source this (bash/zsh/sh): `. scripts/peers/env.sh`
# Exports where scripts/peers/install.sh put meshgate's test peers. Values already set
# in the environment win. It only sets variables: it neither installs nor checks anything.
# (The URLs of the running server peers are in the env file scripts/peers/services.sh writes.)
# shellcheck shell=sh
MESHGATE_PEERS_DIR="${MESHGATE_PEERS_DIR:-$HOME/.cache/meshgate/peers}"
MESHGATE_PYTHON="${MESHGATE_PYTHON:-$MESHGATE_PEERS_DIR/venv/bin/python}"
MESHGATE_TELEMETRYGEN="${MESHGATE_TELEMETRYGEN:-$MESHGATE_PEERS_DIR/bin/telemetrygen}"
MESHGATE_JAEGER="${MESHGATE_JAEGER:-$MESHGATE_PEERS_DIR/bin/jaeger}"
MESHGATE_OPENSEARCH_HOME="${MESHGATE_OPENSEARCH_HOME:-$MESHGATE_PEERS_DIR/opensearch}"
MESHGATE_ELASTICSEARCH_HOME="${MESHGATE_ELASTICSEARCH_HOME:-$MESHGATE_PEERS_DIR/elasticsearch}"
# Prometheus is the Debian package (system-wide), not in the peers dir.
MESHGATE_PROMETHEUS="${MESHGATE_PROMETHEUS:-/usr/bin/prometheus}"
# nginx likewise (tests/scale_e2e.rs).
MESHGATE_NGINX="${MESHGATE_NGINX:-/usr/sbin/nginx}"
# Headless Chromium and chromedriver (Debian packages; tests/service_map_e2e.rs, benches/service_map.rs).
MESHGATE_CHROMIUM="${MESHGATE_CHROMIUM:-/usr/bin/chromium}"
MESHGATE_CHROMEDRIVER="${MESHGATE_CHROMEDRIVER:-/usr/bin/chromedriver}"
# The manifest checkers of tests/deploy.rs and their offline schemas.
MESHGATE_HELM="${MESHGATE_HELM:-$MESHGATE_PEERS_DIR/bin/helm}"
MESHGATE_KUSTOMIZE="${MESHGATE_KUSTOMIZE:-$MESHGATE_PEERS_DIR/bin/kustomize}"
MESHGATE_KUBECONFORM="${MESHGATE_KUBECONFORM:-$MESHGATE_PEERS_DIR/bin/kubeconform}"
MESHGATE_KUBE_SCHEMAS="${MESHGATE_KUBE_SCHEMAS:-$MESHGATE_PEERS_DIR/kube-schemas}"
export MESHGATE_PEERS_DIR MESHGATE_PYTHON MESHGATE_TELEMETRYGEN MESHGATE_JAEGER \
    MESHGATE_OPENSEARCH_HOME MESHGATE_ELASTICSEARCH_HOME MESHGATE_PROMETHEUS MESHGATE_NGINX \
    MESHGATE_HELM MESHGATE_KUSTOMIZE MESHGATE_KUBECONFORM MESHGATE_KUBE_SCHEMAS \
    MESHGATE_CHROMIUM MESHGATE_CHROMEDRIVER
