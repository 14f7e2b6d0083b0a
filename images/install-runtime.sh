#!/bin/sh
# Install the runtime dependencies of an rsnflow image from requirements-runtime.lock (no dev tools).
#   install-runtime.sh cpu   torch and torchvision at the lock's versions from $TORCH_INDEX (PyTorch's
#                            CPU wheels, a tenth of the size), the CUDA runtime wheels left out
#   install-runtime.sh lock  the lock as it is (torch's CUDA build from PyPI; it runs on CPU nodes too)
#   install-runtime.sh extra FILE...  more pinned requirements files (no dependencies resolved)
#   install-runtime.sh project DIR     the project itself, nothing re-resolved (its build backend
#                                      from the wheelhouse too, when there is one)
# WHEELS: a folder of every wheel (a read-only volume of podman build, see make wheelhouse).
set -eu
# A wheelhouse from the build (make wheelhouse): install from it alone, offline.
if [ -n "${WHEELS:-}" ]; then export PIP_FIND_LINKS="$WHEELS" PIP_NO_INDEX=1; fi
mode="${1:?usage: install-runtime.sh cpu|lock|extra FILE...}"
shift
lock=requirements-runtime.lock
case "$mode" in
  lock)
    pip install --no-deps -r "$lock" ;;
  cpu)
    grep -Ev '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' "$lock" > /tmp/requirements-cpu.txt
    pip install --no-deps -r /tmp/requirements-cpu.txt
    pip install --no-deps --index-url "${TORCH_INDEX:?TORCH_INDEX must name the CPU wheel index}" \
      "torch==$(grep -E '^torch==' "$lock" | cut -d= -f3)" \
      "torchvision==$(grep -E '^torchvision==' "$lock" | cut -d= -f3)"
    rm /tmp/requirements-cpu.txt ;;
  extra)
    for file in "$@"; do pip install --no-deps -r "$file"; done ;;
  project)
    pip install --no-deps "$@" ;;
  *)
    echo "install-runtime.sh: unknown mode '$mode' (cpu, lock, extra or project)" >&2; exit 2 ;;
esac
