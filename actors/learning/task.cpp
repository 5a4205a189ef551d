#include "actors/learning/task.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace filo {

Task parse_task(const std::string& name) {
  if (name == "classification") return Task::kClassification;
  if (name == "language_model") return Task::kLanguageModel;
  throw std::invalid_argument("unknown task '" + name + "' (known: classification, language_model)");
}

std::string task_name(Task task) {
  return task == Task::kClassification ? "classification" : "language_model";
}

BatchLoss batch_loss(Task task, const torch::Tensor& outputs, const torch::Tensor& targets) {
  namespace F = torch::nn::functional;
  BatchLoss result;
  if (task == Task::kClassification) {
    result.loss_sum = F::cross_entropy(outputs, targets, F::CrossEntropyFuncOptions().reduction(torch::kSum));
    result.correct = outputs.argmax(1).eq(targets).sum().item<std::int64_t>();
    return result;
  }
  const std::int64_t tokens_per_sample = targets.size(1);
  const auto token_losses = F::cross_entropy(outputs.reshape({-1, outputs.size(-1)}), targets.reshape({-1}),
                                             F::CrossEntropyFuncOptions().reduction(torch::kSum));
  result.loss_sum = token_losses / static_cast<double>(tokens_per_sample);
  return result;
}

std::optional<std::string> output_problem(Task task, const torch::Tensor& outputs,
                                          const torch::Tensor& targets, std::int64_t classes) {
  std::ostringstream text;
  if (task == Task::kClassification) {
    if (outputs.dim() != 2 || outputs.size(0) != targets.size(0) || outputs.size(1) < classes) {
      text << "for classification the model must give logits [N, C] with C >= " << classes
           << " classes; on a batch of " << targets.size(0) << " it gave " << outputs.sizes();
      return text.str();
    }
  } else if (outputs.dim() != 3 || outputs.size(0) != targets.size(0) || outputs.size(1) != targets.size(1) ||
             outputs.size(2) < classes) {
    text << "for a language model the model must give logits [N, T, V] with V >= " << classes
         << " (the vocabulary); on tokens " << targets.sizes() << " it gave " << outputs.sizes();
    return text.str();
  }
  if (!outputs.is_floating_point()) {
    text << "the model gave " << outputs.scalar_type() << " outputs where logits must be floating point";
    return text.str();
  }
  return std::nullopt;
}

std::map<std::string, double> task_metrics(Task task, double loss_sum, std::int64_t correct,
                                           std::int64_t samples) {
  if (samples <= 0) return {};
  const double mean_loss = loss_sum / static_cast<double>(samples);
  if (task == Task::kClassification) {
    return {{"test_accuracy", static_cast<double>(correct) / static_cast<double>(samples)},
            {"test_loss", mean_loss}};
  }
  return {{"test_perplexity", std::exp(mean_loss)}, {"test_loss", mean_loss}};
}

std::string headline_metric(Task task) {
  return task == Task::kClassification ? "test_accuracy" : "test_perplexity";
}

std::string metric_words(std::string metric) {
  std::replace(metric.begin(), metric.end(), '_', ' ');
  return metric;
}

}  // namespace filo
