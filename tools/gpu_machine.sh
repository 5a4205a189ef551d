#!/usr/bin/env bash
# Builds and tests filo on a GPU machine that has no package registry (the workplace's device
# machine: CUDA toolkit, CMake and PyTorch with a CUDA LibTorch, nothing else of filo's), in two
# halves:
#
#   tools/gpu_machine.sh fetch          HERE (Debian 12, with apt): downloads the .debs filo needs
#                                       besides LibTorch, and a copy of the dataset, into .gpu/
#                                       (ignored by git; about 40 MB, under the 64 MiB a run carries)
#   tools/gpu_machine.sh [STEP...]      THERE, from the repository's root, with .gpu carried:
#                                       STEP is build, test, bench, runs or all (the default: the
#                                       first three; runs: short GPU runs of `filo local`, below);
#                                       configure only unpacks and configures (it works here too,
#                                       with FILO_TORCH_PREFIX naming Debian's LibTorch: a check)
#
# On the device machine, through the `run` tool: carry [".gpu"] and the command
#   bash tools/gpu_machine.sh all
# Each step writes $OUT/<step>.log (or build-gpu/<step>.log where OUT is unset). One command may
# run 10 minutes: if `all` does not fit, run `build`, then `test`, then `bench` in calls that follow
# each other within the machine's warm period, so that build-gpu/ is still there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
carry=$root/.gpu

fetch() {
  # filo's Debian packages besides LibTorch, and runtime libraries they need that a PyTorch image
  # may lack. Only sonames missing there are put on the library path (see `unpack`), so
  # that nothing here shadows the machine's own newer libraries.
  local packages=(
    libzmq5 libzmq3-dev cppzmq-dev libnorm1 libpgm-5.3-0 libbsd0 libmd0 libsodium23 libsodium-dev
    libmsgpack-cxx-dev libtomlplusplus-dev libtomlplusplus3 libcli11-dev nlohmann-json3-dev doctest-dev
    libstb0 libstb-dev libmicrohttpd12 libmicrohttpd-dev zlib1g zlib1g-dev
    pkgconf pkgconf-bin libpkgconf3
    # what libzmq5 and libmicrohttpd12 link, should the image lack it (apt's own needs cover most)
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1
    libgnutls30 libnettle8 libhogweed6 libp11-kit0 libtasn1-6 libidn2-0 libunistring2 libgmp10 libffi8
  )
  rm -rf "$carry/debs"
  mkdir -p "$carry/debs" "$carry/data"
  (cd "$carry/debs" && apt-get download "${packages[@]}")
  # The built-in dataset: the GPU tests train on it as the CPU tests do.
  cp -r /usr/share/datasets/fashion-mnist "$carry/data/"
  grep -qx '/.gpu/' .gitignore || echo '/.gpu/' >>.gitignore
  du -sh "$carry"
  echo "gpu_machine: carry [\".gpu\"] and run: bash tools/gpu_machine.sh all"
}

prefix=/tmp/filo-prefix
build_dir=$root/build-gpu
out=${OUT:-$build_dir}

unpack() {
  [ -d "$carry/debs" ] || { echo "gpu_machine: no .gpu/debs: run 'tools/gpu_machine.sh fetch' here first" >&2; exit 2; }
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for deb in "$carry"/debs/*.deb; do dpkg -x "$deb" "$prefix"; done
  # The .pc files say prefix=/usr: point them into the unpacked tree.
  for pc in "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$prefix"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] || continue
    sed -i -e "s#=/usr#=$prefix/usr#g" -e "s#-I/usr#-I$prefix/usr#g" -e "s#-L/usr#-L$prefix/usr#g" "$pc"
    # Static-link requirements (libmicrohttpd's gnutls) whose -dev packages are not carried: filo
    # links shared libraries, and pkg-config refuses a module whose private requirement is missing.
    sed -i -e '/^Requires.private:/d' "$pc"
  done
  # Development symlinks that point at absolute paths (zlib's, at /lib/...) point into the prefix.
  local link target name
  for link in "$prefix"/usr/lib/x86_64-linux-gnu/*.so; do
    target=$(readlink "$link" || true)
    if [[ $target == /* ]]; then ln -sf "$prefix$target" "$link"; fi
  done
  # Runtime libraries the machine lacks, and only those, go on the library path.
  mkdir -p "$prefix/missing"
  local known
  known=$(ldconfig -p)  # read once: `ldconfig -p | grep -q` fails under pipefail when grep stops early
  for library in "$prefix"/usr/lib/x86_64-linux-gnu/*.so.* "$prefix"/lib/x86_64-linux-gnu/*.so.*; do
    name=$(basename "$library")
    # sonames (libzmq.so.5), not the versioned files they point at
    [[ -e $library && $name =~ \.so\.[0-9]+$ ]] || continue
    if ! grep -q "^[[:space:]]$name " <<<"$known"; then ln -sf "$library" "$prefix/missing/$name"; fi
  done
  if [ -d "$carry/data/fashion-mnist" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r "$carry/data/fashion-mnist" /usr/share/datasets/
  fi
}

environment() {
  export LD_LIBRARY_PATH=$prefix/missing${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG_PATH=$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig
  # FILO_TORCH_PREFIX: another LibTorch's CMake prefix (a configure check against Debian's here).
  torch_prefix=${FILO_TORCH_PREFIX:-$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')}
  pkg_config=$(command -v pkg-config || echo "$prefix/usr/bin/pkgconf")
}

configure() {
  unpack
  environment
  nvidia-smi || true
  python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' || true
  # The GPU that builds is the GPU that runs: compile the CUDA benchmarker for it alone.
  local architectures=native
  command -v nvidia-smi >/dev/null || architectures=90
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_PREFIX_PATH="$prefix/usr;$torch_prefix" -DPKG_CONFIG_EXECUTABLE="$pkg_config" \
    -DZLIB_ROOT="$prefix/usr" -DFILO_CUDA_ARCHITECTURES="$architectures"
}

build() {
  configure
  cmake --build "$build_dir" -j"$(nproc)" --target filo filo_tests filo_cluster_tests filo_gpu_tests aggregation
}

run_tests() {
  environment
  # The GPU tests first (they must pass here, not skip), then the CPU suites that check the same
  # sources still hold with this LibTorch.
  ctest --test-dir "$build_dir" --output-on-failure -R '^gpu-'
  "$build_dir/tests/filo_tests"
  "$build_dir/tests/filo_cluster_tests" --test-case='*GPU this machine lacks*,*bf16*'
}

bench() {
  environment
  "$build_dir/aggregation"
  "$build_dir/filo" bench || true
}

# One epoch of `filo local` with every trainer and the aggregator on cuda:0, in the modes and
# precisions the tests cover only on a CPU: fp16 with its loss scale, bf16 local-sgd with compressed
# deltas, and a model of 1.86 M parameters in each mode. Prints each run's summary line.
runs() {
  environment
  local runs_dir=${OUT:-$build_dir}/runs gpu="--set run.device=cuda:0 --web off --epochs 1"
  python3 tools/examples/make_mlp.py /tmp/filo-mlp.pt
  one() {
    local name=$1
    shift
    echo "== $name: filo local $*"
    timeout 120 "$build_dir/filo" local $gpu --set run.run_dir="$runs_dir/$name" "$@" >"$runs_dir-$name.log" 2>&1 ||
      { echo "   failed:"; tail -5 "$runs_dir-$name.log"; return; }
    python3 - "$runs_dir/$name/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"   test accuracy {s['final_test_accuracy']}, {s['rounds']} rounds, {s['training_seconds']:.2f} s training, "
      f"samples {[n['samples'] for n in s['nodes']]}, refused {s['dropped'] or 'none'}, "
      f"excluded {[e['trainer'] for e in s.get('exclusions', [])] or 'none'}")
PY
  }
  mkdir -p "$runs_dir"
  one fp16-3 --set local.devices=cuda:0,cuda:0,cuda:0 --set train.precision=fp16 --set data.train_limit=20000
  one fp32-3 --set local.devices=cuda:0,cuda:0,cuda:0 --set data.train_limit=20000
  one bf16-topk-q8 --set local.devices=cuda:0,cuda:0 --set train.precision=bf16 --set optimizer.mode=local-sgd \
    --set optimizer.compression=topk-q8 --set data.train_limit=20000
  local mode compression
  for mode in gradient local-sgd; do
    for compression in none topk-q8; do
      [ "$mode/$compression" = gradient/topk-q8 ] && continue
      one "mlp-$mode-$compression" --set local.devices=cuda:0,cuda:0 --set model.path=/tmp/filo-mlp.pt \
        --set data.train_limit=12000 --set optimizer.mode=$mode --set optimizer.compression=$compression
    done
  done
}

step() {
  local name=$1
  mkdir -p "$out"
  echo "== gpu_machine: $name ($(date -u +%FT%TZ))"
  "$2" 2>&1 | tee "$out/$name.log"
}

case "${1:-all}" in
  fetch) fetch ;;
  configure) step configure configure ;;
  build) step build build ;;
  test) step test run_tests ;;
  bench) step bench bench ;;
  runs) step runs runs ;;
  all)
    step build build
    step test run_tests
    step bench bench
    ;;
  *)
    echo "usage: tools/gpu_machine.sh fetch | configure | build | test | bench | runs | all" >&2
    exit 2
    ;;
esac
