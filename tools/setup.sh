#!/usr/bin/env bash
# Installs what filo needs from Debian's packages, then configures and builds it in build/.
#   tools/setup.sh           the main job: the packages `build/filo` needs, and `build/filo` itself
#   tools/setup.sh --tests   also what only the tests use (a browser, promtool, SLURM, PyTorch for
#                            Python, doctest), and every test, bench and tool
# Idempotent: packages already present are not touched; the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=false
case "${1:-}" in
  "") ;;
  --tests) tests=true ;;
  *) echo "usage: tools/setup.sh [--tests]" >&2; exit 2 ;;
esac

packages=(
  build-essential cmake pkg-config zlib1g-dev
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev      # the bus
  libtorch-dev libopenblas0-pthread              # training (OpenBLAS: ~17x faster SGEMM than the reference BLAS)
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev  # configuration, command line, run records
  dataset-fashion-mnist                           # the built-in dataset
  libstb-dev                                      # image folders: stb_image decodes PNG/JPEG, stb_image_resize scales
  libsodium-dev                                   # SHA-256 of model archives and datasets (and CurveZMQ's crypto)
  libmicrohttpd-dev                               # the dashboard's embedded HTTP server
)
test_packages=(
  doctest-dev                                     # the test framework
  iproute2                                        # ip netns and tc for the fault suite and the slow-link bench
  python3-numpy                                   # .npy fixtures and reading safetensors back from Python
  python3-torch                                   # TorchScript models written in Python, the DDP peer
  chromium                                        # a real headless browser renders the dashboard
  prometheus                                      # promtool checks /metrics (the server is not used)
  slurm-wlm munge                                 # tools/slurm/filo.sbatch on a single-machine SLURM
)
if $tests; then packages+=("${test_packages[@]}"); fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

# Tests are configured whenever doctest is installed (after a --tests set-up, always).
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if $tests; then
  cmake --build build -j"$(nproc)"
  echo "setup: built build/filo, the tests and the benches"
else
  cmake --build build -j"$(nproc)" --target filo
  echo "setup: built build/filo (tools/setup.sh --tests adds what the tests need)"
fi
