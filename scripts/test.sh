#!/usr/bin/env bash
# The README's test command: set up, lint, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check auditor addons tests bench samples
python3 -m pytest -q -p no:cacheprovider "$@"
