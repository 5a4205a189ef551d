#pragma once
// Long work off an actor's thread. An actor that computes inside a handler is deaf until the
// computation ends: its heartbeats stop, plans and control wait, and a coordinator declares it lost.
// A WorkerThread runs the actor's jobs one at a time on a thread of its own and wakes the actor's
// loop when one ends (a zero-length message on an inproc PAIR that the loop polls), so the actor
// keeps serving its mailbox whatever the job costs.
//
// A job talks back only through state its closure captures, which the actor reads after
// take_finished() returns it (the hand-over is ordered by the worker's mutex). An exception a job
// throws is kept as an exception_ptr and handed to the actor with the job's end (as gloo keeps its
// I/O threads' errors), never lost and never raised on the worker's own thread.
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "runtime/scoped_thread.hpp"
#include "runtime/socket_factory.hpp"

namespace filo {

class WorkerThread {
 public:
  using Job = std::function<void()>;
  struct Finished {
    std::string what;            /// the job's name, as submitted
    std::exception_ptr failure;  /// what the job threw, or null
  };

  /// `on_start` runs first on the new thread (a device guard, a name, a priority).
  WorkerThread(const SocketFactory& sockets, std::string name, std::function<void()> on_start = {});
  /// Asks a running job to stop (cancel_requested()) and joins the thread.
  ~WorkerThread();
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  /// Readable when a job has ended: the actor's loop polls it and then calls take_finished().
  zmq::socket_t& finished_signal() { return signal_in_; }
  /// Whether a job was submitted and not yet taken back with take_finished().
  bool busy() const { return busy_; }
  /// Runs `job` on the worker. Only while not busy(): one job at a time, in the actor's order.
  void submit(std::string what, Job job);
  /// The job that ended, once finished_signal() was readable; nothing while it still runs.
  std::optional<Finished> take_finished();

  /// Asks the running job to end early; a job looks at cancel_requested() between its pieces.
  void cancel() { cancel_.store(true, std::memory_order_relaxed); }
  bool cancel_requested() const { return cancel_.load(std::memory_order_relaxed); }

 private:
  void run(const std::function<void()>& on_start);

  std::string name_;
  zmq::socket_t signal_in_;   // the actor's end
  zmq::socket_t signal_out_;  // the worker's end, used only on its thread once it runs
  std::mutex mutex_;
  std::condition_variable wake_;
  std::optional<Job> queued_;        // guarded by mutex_
  std::optional<Finished> done_;     // guarded by mutex_
  std::string queued_what_;          // guarded by mutex_
  bool stopping_ = false;            // guarded by mutex_
  bool busy_ = false;                // the actor's view; only its thread touches it
  std::atomic<bool> cancel_{false};  // set by the actor, read by the job
  ScopedThread thread_;              // last: joined before the rest goes
};

/// Thrown by a job that ended because cancel_requested() said so: not a failure.
struct JobCancelled : std::exception {
  const char* what() const noexcept override { return "cancelled"; }
};

}  // namespace filo
