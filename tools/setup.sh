#!/usr/bin/env bash
# Installs everything filo needs from Debian's packages, then configures and builds it in build/.
# Idempotent: packages already present are not touched; the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config zlib1g-dev
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev      # the bus
  libtorch-dev libopenblas0-pthread              # training (OpenBLAS: ~17x faster SGEMM than the reference BLAS)
  libtomlplusplus-dev libcli11-dev nlohmann-json3-dev  # configuration, command line, run records
  doctest-dev iproute2                            # tests; iproute2: ip netns and tc for the fault suite
  dataset-fashion-mnist                           # the built-in dataset
  libstb-dev                                      # image folders: stb_image decodes PNG/JPEG, stb_image_resize scales
  libsodium-dev                                   # SHA-256 of model archives and datasets (and CurveZMQ's crypto)
  python3-numpy                                   # tests: .npy fixtures and reading safetensors back from Python
  python3-torch                                   # tests and benches: TorchScript models written in Python, the DDP peer
  libmicrohttpd-dev                               # the dashboard's embedded HTTP server
  chromium                                        # tests: a real headless browser renders the dashboard
  prometheus                                      # tests: promtool checks /metrics (the server is not used)
  slurm-wlm munge                                 # tests: tools/slurm/filo.sbatch on a single-machine SLURM
)
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

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
echo "setup: built build/filo"
