#!/usr/bin/env bash
# Static checks of the cluster recipes: the Slurm script parses, the Kubernetes manifest passes
# schema validation (kubernetes-validate from PyPI, offline schemas), and the headless build has
# no GUI or audio library in its dynamic section. Run from .ci/run after `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}

bash -n packaging/cluster/foley-batch.sbatch
bash -n packaging/cluster/test-slurm.sh

venv=${FOLEY_CI_VENV:-$HOME/.cache/foley-ci-venv}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0
fi
"$venv/bin/kubernetes-validate" --strict packaging/cluster/indexed-job.yaml

# The headless binary (built last: it replaces the studio build's debug/foley).
cargo build --no-default-features
needed=$(readelf -d "$target/debug/foley" | grep NEEDED || true)
if echo "$needed" | grep -Eiq 'asound|X11|xcb|wayland|GL|EGL|xkbcommon|gtk'; then
  echo "the headless build links GUI or audio libraries:"; echo "$needed"; exit 1
fi
"$target/debug/foley" --version
if "$target/debug/foley" >/dev/null 2>&1; then
  echo "the headless build should refuse to open a studio"; exit 1
fi
echo "cluster checks passed (the Containerfile is not built here: this machine has no container engine)"
