#pragma once

namespace filo {

/// Sets LibTorch's intra-op threads and, where LibTorch reaches OpenBLAS, OpenBLAS's own pool.
/// OpenBLAS's pthread build otherwise starts one spinning thread per core in every process:
/// three trainers on two cores then ran 1.6x slower (filo local, 6000 samples, 2-core VM).
void set_compute_threads(int threads);

}  // namespace filo
