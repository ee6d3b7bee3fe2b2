#!/usr/bin/env bash
# Build the local virtual environment(s). Idempotent: a finished environment is reused.
#   scripts/setup_env.sh full      -> .venv: runtime + training + conversion + dev (what `make test` and `make demo` use)
#   scripts/setup_env.sh runtime   -> .venv-runtime: numpy + ai-edge-litert only (the on-device footprint)
# Every install is pinned by requirements/constraints.txt; torch is installed first so pip never
# resolves a CUDA build, and onnx2tf / tf-keras go in with --no-deps (see docs/toolchain.md).
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-full}"
PYTHON="${PYTHON:-python3}"
# The checkout on the venv's import path (a .pth file, as an editable install makes): programs anywhere run
# with `.venv/bin/python my_loop.py` import edge_anytime, training and simulator from here; .venv-runtime
# gets edge_anytime alone (the device's footprint), through a folder holding a link to it.
link_checkout() {
  local site target="$PWD"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if [ "$kind" = runtime ]; then
    target="$PWD/$venv/checkout"
    mkdir -p "$target"; ln -sfn "$PWD/edge_anytime" "$target/edge_anytime"
  fi
  printf '%s\n' "$target" > "$site/edge_anytime_checkout.pth"
}
pip_install() { "$venv/bin/python" -m pip install -q --disable-pip-version-check -c requirements/constraints.txt "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

case "$kind" in
  runtime)
    venv=.venv-runtime
    stamp="$venv/.edge_anytime-$(cat requirements/runtime.txt requirements/constraints.txt | sha256sum | cut -c1-12)"
    [ -f "$stamp" ] && { link_checkout; exit 0; }
    rm -rf "$venv"; "$PYTHON" -m venv "$venv"
    pip_install -r requirements/runtime.txt
    link_checkout
    touch "$stamp" ;;
  full)
    venv=.venv
    stamp="$venv/.edge_anytime-$(cat requirements/*.txt | sha256sum | cut -c1-12)"
    [ -f "$stamp" ] && { link_checkout; exit 0; }
    rm -rf "$venv"; "$PYTHON" -m venv "$venv"
    echo "setting up $venv (pinned; about 1-2 minutes) ..."
    pip_install torch==2.13.0
    pip_install -r requirements/runtime.txt -r requirements/train.txt -r requirements/convert.txt -r requirements/dev.txt
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r requirements/convert-nodeps.txt
    link_checkout
    touch "$stamp" ;;
  *) echo "usage: $0 [full|runtime]" >&2; exit 2 ;;
esac
