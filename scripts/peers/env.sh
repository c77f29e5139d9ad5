# Source this (bash/zsh/sh): `. scripts/peers/env.sh`
# Exports where scripts/peers/install.sh put meshgate's test peers. Values already set
# in the environment win. It only sets variables: it neither installs nor checks anything.
MESHGATE_PEERS_DIR="${MESHGATE_PEERS_DIR:-$HOME/.cache/meshgate/peers}"
MESHGATE_PYTHON="${MESHGATE_PYTHON:-$MESHGATE_PEERS_DIR/venv/bin/python}"
MESHGATE_TELEMETRYGEN="${MESHGATE_TELEMETRYGEN:-$MESHGATE_PEERS_DIR/bin/telemetrygen}"
export MESHGATE_PEERS_DIR MESHGATE_PYTHON MESHGATE_TELEMETRYGEN
