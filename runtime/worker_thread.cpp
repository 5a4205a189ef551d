#include "runtime/worker_thread.hpp"

#include "runtime/thread_name.hpp"

namespace filo {
namespace {
std::string signal_endpoint(const void* worker) {
  return "inproc://worker-" + std::to_string(reinterpret_cast<std::uintptr_t>(worker));
}
}  // namespace

WorkerThread::WorkerThread(const SocketFactory& sockets, std::string name, std::function<void()> on_start)
    : name_(std::move(name)),
      signal_in_(sockets.make(zmq::socket_type::pair)),
      signal_out_(sockets.make(zmq::socket_type::pair)) {
  signal_in_.bind(signal_endpoint(this));
  signal_out_.connect(signal_endpoint(this));
  // signal_out_ moves to the worker here; thread start is the memory barrier zmq requires.
  thread_ = ScopedThread([this, on_start = std::move(on_start)] { run(on_start); });
}

WorkerThread::~WorkerThread() {
  cancel();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void WorkerThread::submit(std::string what, Job job) {
  if (busy_) throw std::logic_error(name_ + ": a job was submitted while " + queued_what_ + " runs");
  cancel_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_ = std::move(job);
    queued_what_ = std::move(what);
  }
  busy_ = true;
  wake_.notify_one();
}

std::optional<WorkerThread::Finished> WorkerThread::take_finished() {
  zmq::message_t signal;
  while (signal_in_.recv(signal, zmq::recv_flags::dontwait)) {
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (!done_) return std::nullopt;
  std::optional<Finished> finished = std::move(done_);
  done_.reset();
  busy_ = false;
  return finished;
}

void WorkerThread::run(const std::function<void()>& on_start) {
  name_this_thread(name_);
  std::exception_ptr start_failure;  // every job reports it: the worker cannot do what it is for
  try {
    if (on_start) on_start();
  } catch (...) {
    start_failure = std::current_exception();
  }
  while (true) {
    Job job;
    std::string what;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || queued_.has_value(); });
      if (stopping_) return;
      job = std::move(*queued_);
      queued_.reset();
      what = queued_what_;
    }
    Finished finished{what, start_failure};
    if (!start_failure) {
      try {
        job();
      } catch (...) {
        finished.failure = std::current_exception();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = std::move(finished);
    }
    // A PAIR over inproc with room queued: this never blocks for long, and a full queue only means
    // the actor has a wake-up waiting already.
    signal_out_.send(zmq::message_t(), zmq::send_flags::dontwait);
  }
}

}  // namespace filo
