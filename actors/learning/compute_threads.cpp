#include "actors/learning/compute_threads.hpp"

#include <dlfcn.h>

#include <torch/torch.h>

namespace filo {

void set_compute_threads(int threads) {
  torch::set_num_threads(threads);
  // Looked up at run time: the BLAS behind LibTorch is chosen by the system, not by this build.
  using SetThreads = void (*)(int);
  if (auto* set_openblas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_openblas(threads);
  }
}

}  // namespace filo
