#include "actors/learning/evaluation.hpp"

#include "runtime/thread_name.hpp"
#include "runtime/thread_priority.hpp"

namespace filo {
namespace {
constexpr std::int64_t kEvaluationBatch = 1000;
}

std::map<std::string, double> evaluate(Model& model, Task task, const Dataset& dataset) {
  if (dataset.size() == 0) return {};
  torch::NoGradGuard no_grad;
  model.train(false);
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  for (std::int64_t start = 0; start < dataset.size(); start += kEvaluationBatch) {
    const auto indices =
        torch::arange(start, std::min(dataset.size(), start + kEvaluationBatch), torch::kInt64);
    auto [inputs, targets] = dataset.batch(indices);
    const BatchLoss loss =
        batch_loss(task, model.forward(inputs.to(model.device())), targets.to(model.device()));
    loss_sum += loss.loss_sum.item<double>();
    correct += loss.correct;
  }
  model.train(true);
  return task_metrics(task, loss_sum, correct, dataset.size());
}

EvaluationWorker::EvaluationWorker(Model replica, Task task, Dataset test_set)
    : replica_(std::move(replica)), task_(task), test_set_(std::move(test_set)), thread_([this] { run(); }) {}

EvaluationWorker::~EvaluationWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  thread_.join();
}

void EvaluationWorker::submit(std::uint64_t epoch, std::uint64_t model_version, const Model& model) {
  Job job{Result{epoch, model_version, {}, {}}, model.parameters().zeros_like(),
          model.buffers().zeros_like()};
  job.parameters.copy_from(model.parameters());
  job.buffers.copy_from(model.buffers());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  work_ready_.notify_all();
}

std::optional<EvaluationWorker::Result> EvaluationWorker::take_result() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (results_.empty()) return std::nullopt;
  Result result = std::move(results_.front());
  results_.pop_front();
  return result;
}

std::size_t EvaluationWorker::outstanding() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return jobs_.size() + results_.size();
}

void EvaluationWorker::run() {
  name_this_thread("evaluation");
  lower_this_thread_priority();  // an epoch's evaluation overlaps the next epoch's rounds
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    Job job = std::move(jobs_.front());
    lock.unlock();
    Result result = job.result;
    try {
      replica_.parameters().copy_from(job.parameters);
      replica_.buffers().copy_from(job.buffers);
      result.metrics = evaluate(replica_, task_, test_set_);
    } catch (const std::exception& e) {
      result.problem = std::string("evaluation failed: ") + e.what();
    }
    lock.lock();
    jobs_.pop_front();
    results_.push_back(std::move(result));
  }
}

}  // namespace filo
