#!/usr/bin/env bash
# From a fresh clone: install, then fine-tune the embedded SmolLM2 on airline tweets (two runs: the defaults, with their forgetting budget, and the same run without it; about 6 minutes a run on 2 quiet cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m tailorlm demo "$@"
