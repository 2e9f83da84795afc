#!/usr/bin/env bash
# Builds the eight-stage WORKDIR/COPY/RUN Dockerfile of the e2e test
# `parallel_stages_mixing_workdir_copy_and_run_build_every_time` many times in a row (50 unless
# told otherwise), to catch races between host-side unmounts and sandboxes starting (issue 16
# item 7). The ordinary suite builds it 3 times to stay well under a minute. Needs root.
#
#   scripts/stress-parallel-stages.sh [ITERATIONS]
set -euo pipefail

iterations="${1:-50}"
[[ "$iterations" =~ ^[0-9]+$ ]] || {
    echo "stress-parallel-stages.sh: error: ITERATIONS must be a number, not '$iterations'" >&2
    exit 2
}
cd "$(dirname "$0")/.."
KILN_STRESS_ITERATIONS="$iterations" exec cargo test --test e2e \
    parallel_stages_mixing_workdir_copy_and_run_build_every_time -- --nocapture
