#!/usr/bin/env bash
# facewire developer entry point.
#   ./dev.sh demo    set up, then run the live demo (monitor on http://127.0.0.1:6010)
#   ./dev.sh test    set up, then run the whole test suite
#   ./dev.sh setup   only install: system packages, virtualenv, model files
#   ./dev.sh lint    ruff + mypy
#   ./dev.sh bench   the benchmarks (tables on stdout, JSON under bench/results/)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${FACEWIRE_VENV:-.venv}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

# Debian packages the project needs; only what is missing is installed.
system_deps() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  [ -n "$PY" ] || missing+=(python3)
  if [ -n "$PY" ] && ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
  fi
  [ -n "$PY" ] || PY=python3
  # the distro's broker may not be running; the demo and tests start their own
}

python_deps() {
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV ($("$PY" --version))"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.facewire-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing facewire and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev,export]'
    touch "$stamp"
  fi
}

model_files() {
  if [ ! -f models/sface.onnx ] || [ ! -f models/yunet.onnx ] || [ ! -f models/face_landmark.onnx ]; then
    say "preparing the SFace, YuNet and face landmark model files"
    "$VENV/bin/facewire" models prepare all
  fi
}

setup() { system_deps; python_deps; model_files; }

case "${1:-help}" in
  setup) setup ;;
  demo) setup; shift; exec "$VENV/bin/facewire" demo "$@" ;;
  test) setup; shift; exec "$VENV/bin/python" -m pytest "$@" ;;
  lint) setup; "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check . && "$VENV/bin/mypy" ;;
  bench) setup; shift; exec "$VENV/bin/facewire" bench all "$@" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; [ "${1:-help}" = help ] ;;
esac
