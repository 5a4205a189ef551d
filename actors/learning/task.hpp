#pragma once
// What a model is trained to do, and so its loss and its metric. "classification": logits [N, C]
// against integer labels [N], cross-entropy, accuracy. "language_model": logits [N, T, V] against
// the next tokens [N, T], next-token cross-entropy, perplexity.
//
// Losses are summed over samples, so that the aggregator's one division by the round's samples
// makes the combined gradient exactly one large-batch step. A language model's sample is a window
// of T tokens and its loss is the mean over its tokens, so that the step is on the mean token loss
// as one would train it in Python.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <torch/torch.h>

namespace filo {

enum class Task { kClassification, kLanguageModel };

/// "classification" or "language_model"; throws std::invalid_argument naming the known tasks.
Task parse_task(const std::string& name);
std::string task_name(Task task);

struct BatchLoss {
  torch::Tensor loss_sum;    /// a scalar with a graph: backward() gives the summed gradient
  std::int64_t correct = 0;  /// classification: correctly classified samples
};

BatchLoss batch_loss(Task task, const torch::Tensor& outputs, const torch::Tensor& targets);

/// Why `outputs` cannot be the model's answer to `targets` for `task` with `classes` outputs (or a
/// vocabulary of that size), or nothing. Checked on one batch before training starts.
std::optional<std::string> output_problem(Task task, const torch::Tensor& outputs,
                                          const torch::Tensor& targets, std::int64_t classes);

/// The task's metrics from summed losses over `samples`: {"test_accuracy"} or {"test_perplexity",
/// "test_loss"}.
std::map<std::string, double> task_metrics(Task task, double loss_sum, std::int64_t correct,
                                           std::int64_t samples);

/// The metric a run is judged by: "test_accuracy" or "test_perplexity".
std::string headline_metric(Task task);
/// A metric's name for people: "test_perplexity" is "test perplexity".
std::string metric_words(std::string metric);

}  // namespace filo
