#!/usr/bin/env bash
# Run by snakemake inside the new conda env once it is created (from a copy of this file in
# the conda prefix, with snakemake's working directory): installs this checkout in editable
# mode. DOSEDIFF_SOURCE is set by workflow/rules/common.smk to the checkout's absolute path
# (a user may set it beforehand, e.g. to a git URL when the workflow is used as a module).
# --no-deps: conda already provides every dependency, pip must not pull a second torch.
set -euo pipefail
if [ -z "${DOSEDIFF_SOURCE:-}" ]; then
    echo "dosediff post-deploy: DOSEDIFF_SOURCE is not set; expected the dosediff checkout" \
        "(set by workflow/rules/common.smk). Fix: run snakemake on workflow/Snakefile or" \
        "export DOSEDIFF_SOURCE=/path/to/dosediff." >&2
    exit 1
fi
if [ -d "$DOSEDIFF_SOURCE" ]; then
    python -m pip install --no-deps --no-build-isolation -e "$DOSEDIFF_SOURCE"
else
    python -m pip install --no-deps "$DOSEDIFF_SOURCE"
fi
