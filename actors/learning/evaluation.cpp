#include "actors/learning/evaluation.hpp"

#include "actors/learning/parameters.hpp"

namespace filo {
namespace {
constexpr std::int64_t kEvaluationBatch = 1000;
}

double evaluate_accuracy(torch::nn::Sequential& model, const Dataset& dataset) {
  if (dataset.size() == 0) return 0.0;
  torch::NoGradGuard no_grad;
  model->eval();
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < dataset.size(); start += kEvaluationBatch) {
    const auto indices =
        torch::arange(start, std::min(dataset.size(), start + kEvaluationBatch), torch::kInt64);
    auto [images, labels] = dataset.batch(indices);
    correct += model->forward(images).argmax(1).eq(labels).sum().item<std::int64_t>();
  }
  model->train();
  return static_cast<double>(correct) / static_cast<double>(dataset.size());
}

EvaluationWorker::EvaluationWorker(torch::nn::Sequential replica, Dataset test_set)
    : replica_(std::move(replica)), test_set_(std::move(test_set)), thread_([this] { run(); }) {}

EvaluationWorker::~EvaluationWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  thread_.join();
}

bool EvaluationWorker::start(std::uint64_t epoch, std::uint64_t model_version,
                             const std::vector<NamedTensor>& parameters,
                             const std::vector<NamedTensor>& buffers) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (busy_) return false;
  {
    torch::NoGradGuard no_grad;
    auto targets = named_parameters(*replica_);
    for (std::size_t i = 0; i < targets.size(); ++i) targets[i].tensor.copy_(parameters.at(i).tensor);
    auto target_buffers = named_buffers(*replica_);
    for (std::size_t i = 0; i < target_buffers.size(); ++i)
      target_buffers[i].tensor.copy_(buffers.at(i).tensor);
  }
  job_ = Result{epoch, model_version, {}, {}};
  result_.reset();
  busy_ = true;
  work_ready_.notify_all();
  return true;
}

std::optional<EvaluationWorker::Result> EvaluationWorker::take_result() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<Result> result = std::move(result_);
  result_.reset();
  return result;
}

bool EvaluationWorker::busy() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return busy_;
}

void EvaluationWorker::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_ready_.wait(lock, [this] { return stopping_ || busy_; });
    if (stopping_) return;
    Result result = job_;
    lock.unlock();
    try {
      result.metrics["test_accuracy"] = evaluate_accuracy(replica_, test_set_);
    } catch (const std::exception& e) {
      result.problem = std::string("evaluation failed: ") + e.what();
    }
    lock.lock();
    result_ = std::move(result);
    busy_ = false;
  }
}

}  // namespace filo
