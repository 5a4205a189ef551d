#pragma once
// Scoring a model on the test set, and a worker that does it on a thread of its own so that the
// aggregator goes on combining rounds while an epoch's model is scored.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "actors/learning/model.hpp"
#include "actors/learning/task.hpp"

namespace filo {

/// The task's metrics of `model` on `dataset` (eval mode, no gradients): "test_accuracy" for
/// classification, "test_perplexity" for a language model, and "test_loss" for both.
std::map<std::string, double> evaluate(Model& model, Task task, const Dataset& dataset);

class EvaluationWorker {
 public:
  struct Result {
    std::uint64_t epoch = 0;
    std::uint64_t model_version = 0;
    std::map<std::string, double> metrics;
    std::string problem;  // what failed, when scoring failed
  };

  /// `replica` is a model of the run's layout that only this worker uses.
  EvaluationWorker(Model replica, Task task, Dataset test_set);
  ~EvaluationWorker();
  EvaluationWorker(const EvaluationWorker&) = delete;
  EvaluationWorker& operator=(const EvaluationWorker&) = delete;

  /// Copies `model`'s parameters and buffers now and scores them in the background, after any
  /// evaluation still under way (a short epoch can end before the last one was scored).
  void submit(std::uint64_t epoch, std::uint64_t model_version, const Model& model);
  /// The next finished result, in the order they were submitted.
  std::optional<Result> take_result();
  /// Evaluations submitted and not yet taken.
  std::size_t outstanding() const;

 private:
  struct Job {
    Result result;
    FlatTensors parameters;
    FlatTensors buffers;
  };
  void run();

  Model replica_;
  Task task_;
  Dataset test_set_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  bool stopping_ = false;
  std::deque<Job> jobs_;
  std::deque<Result> results_;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace filo
