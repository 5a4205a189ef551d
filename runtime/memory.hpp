#pragma once

namespace filo {

/// Keeps freed message buffers in the process instead of handing them back to the kernel.
/// ZeroMQ allocates every received frame; with glibc's defaults a 256 MB model arriving as 1 MB
/// frames is faulted in afresh each time (~11 us per 4 KiB page here). Call once, in main.
void keep_message_memory();

}  // namespace filo
