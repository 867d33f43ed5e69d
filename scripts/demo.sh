#!/usr/bin/env bash
# From a fresh clone: install, then fine-tune the embedded SmolLM2 on airline tweets (about 6 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m tailorlm demo "$@"
