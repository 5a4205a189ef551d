#pragma once
// Scoring a model on the test set, and a worker that does it on a thread of its own so that the
// aggregator goes on combining rounds while an epoch's model is scored.
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "actors/learning/dataset.hpp"
#include "messages/tensor_frames.hpp"

namespace filo {

/// Fraction of `dataset` that `model` classifies correctly (eval mode, no gradients).
double evaluate_accuracy(torch::nn::Sequential& model, const Dataset& dataset);

class EvaluationWorker {
 public:
  struct Result {
    std::uint64_t epoch = 0;
    std::uint64_t model_version = 0;
    std::map<std::string, double> metrics;
    std::string problem;  // what failed, when scoring failed
  };

  /// `replica` is a model of the run's architecture that only this worker uses.
  EvaluationWorker(torch::nn::Sequential replica, Dataset test_set);
  ~EvaluationWorker();
  EvaluationWorker(const EvaluationWorker&) = delete;
  EvaluationWorker& operator=(const EvaluationWorker&) = delete;

  /// Copies `parameters` and `buffers` into the replica now and scores it in the background.
  /// Returns false, changing nothing, while an earlier evaluation is still under way.
  bool start(std::uint64_t epoch, std::uint64_t model_version, const std::vector<NamedTensor>& parameters,
             const std::vector<NamedTensor>& buffers);
  /// The result of the last evaluation, once, when it has finished.
  std::optional<Result> take_result();
  bool busy() const;

 private:
  void run();

  torch::nn::Sequential replica_;
  Dataset test_set_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  bool stopping_ = false;
  bool busy_ = false;
  Result job_;
  std::optional<Result> result_;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace filo
