#include "actors/learning/models.hpp"

#include <cmath>
#include <numeric>
#include <stdexcept>

namespace filo {
namespace {
using torch::jit::Module;

/// Modules of one model share a compilation unit; each class name is made unique in it.
class Builder {
 public:
  Module module(const std::string& type) {
    Module module(c10::QualifiedName("__torch__.filo." + type), unit_, /*shouldMangle=*/true);
    module.register_attribute("training", c10::BoolType::get(), true);
    return module;
  }

 private:
  std::shared_ptr<torch::jit::CompilationUnit> unit_ = std::make_shared<torch::jit::CompilationUnit>();
};

void parameter(Module& module, const std::string& name, torch::Tensor value) {
  module.register_parameter(name, value.set_requires_grad(true), /*is_buffer=*/false);
}

torch::Tensor uniform(std::vector<std::int64_t> shape, double bound) {
  return torch::empty(shape).uniform_(-bound, bound);
}

/// PyTorch's Linear: weight and bias uniform in ±1/sqrt(fan_in) (kaiming_uniform with a = √5).
Module linear(Builder& builder, std::int64_t in, std::int64_t out, bool bias = true) {
  Module module = builder.module("Linear");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  parameter(module, "weight", uniform({out, in}, bound));
  if (bias) {
    parameter(module, "bias", uniform({out}, bound));
    module.define("def forward(self, x):\n    return torch.linear(x, self.weight, self.bias)\n");
  } else {
    module.define("def forward(self, x):\n    return torch.linear(x, self.weight)\n");
  }
  return module;
}

/// PyTorch's Conv2d initialisation, fan_in = in × k × k.
Module conv2d(Builder& builder, std::int64_t in, std::int64_t out, std::int64_t kernel, std::int64_t stride,
              std::int64_t padding, bool bias) {
  Module module = builder.module("Conv2d");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in * kernel * kernel));
  parameter(module, "weight", uniform({out, in, kernel, kernel}, bound));
  const std::string geometry = "[" + std::to_string(stride) + ", " + std::to_string(stride) + "], [" +
                               std::to_string(padding) + ", " + std::to_string(padding) + "]";
  if (bias) {
    parameter(module, "bias", uniform({out}, bound));
    module.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, self.bias, " + geometry +
                  ")\n");
  } else {
    module.define("def forward(self, x):\n    return torch.conv2d(x, self.weight, None, " + geometry + ")\n");
  }
  return module;
}

/// PyTorch's BatchNorm2d: momentum 0.1, eps 1e-5, running statistics and a batch counter as buffers.
Module batch_norm2d(Builder& builder, std::int64_t channels) {
  Module module = builder.module("BatchNorm2d");
  parameter(module, "weight", torch::ones({channels}));
  parameter(module, "bias", torch::zeros({channels}));
  module.register_buffer("running_mean", torch::zeros({channels}));
  module.register_buffer("running_var", torch::ones({channels}));
  module.register_buffer("num_batches_tracked", torch::zeros({}, torch::kInt64));
  module.define(R"(
def forward(self, x):
    if self.training:
        self.num_batches_tracked.add_(1)
    return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training, 0.1, 1e-05, True)
)");
  return module;
}

Module layer_norm(Builder& builder, std::int64_t width) {
  Module module = builder.module("LayerNorm");
  parameter(module, "weight", torch::ones({width}));
  parameter(module, "bias", torch::zeros({width}));
  module.define("def forward(self, x):\n    return torch.layer_norm(x, [" + std::to_string(width) +
                "], self.weight, self.bias, 1e-05, True)\n");
  return module;
}

std::int64_t product(const std::vector<std::int64_t>& shape) {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

void require_image(const std::string& name, const ModelShape& shape, std::int64_t divisor) {
  if (shape.sample_shape.size() != 3 || shape.sample_shape[1] % divisor != 0 ||
      shape.sample_shape[2] % divisor != 0) {
    std::string given;
    for (auto d : shape.sample_shape) given += (given.empty() ? "" : "x") + std::to_string(d);
    throw std::invalid_argument(
        "model '" + name + "' takes images of shape C x H x W with H and W divisible by " +
        std::to_string(divisor) + ", not samples of shape " + (given.empty() ? "()" : given));
  }
}

Module cnn(const ModelShape& shape) {
  require_image("cnn", shape, 4);
  Builder builder;
  Module model = builder.module("Cnn");
  const std::int64_t channels = shape.sample_shape[0];
  model.register_module("conv1", conv2d(builder, channels, 16, 5, 1, 2, true));
  model.register_module("bn1", batch_norm2d(builder, 16));
  model.register_module("conv2", conv2d(builder, 16, 32, 5, 1, 2, true));
  model.register_module("bn2", batch_norm2d(builder, 32));
  model.register_module(
      "fc", linear(builder, 32 * (shape.sample_shape[1] / 4) * (shape.sample_shape[2] / 4), shape.classes));
  model.define(R"(
def forward(self, x):
    x = torch.max_pool2d(torch.relu(self.bn1.forward(self.conv1.forward(x))), [2, 2])
    x = torch.max_pool2d(torch.relu(self.bn2.forward(self.conv2.forward(x))), [2, 2])
    return self.fc.forward(torch.flatten(x, 1))
)");
  return model;
}

Module mlp(const ModelShape& shape) {
  Builder builder;
  Module model = builder.module("Mlp");
  model.register_module("fc1", linear(builder, product(shape.sample_shape), 128));
  model.register_module("fc2", linear(builder, 128, shape.classes));
  model.define(
      "def forward(self, x):\n    return self.fc2.forward(torch.relu(self.fc1.forward(torch.flatten(x, "
      "1))))\n");
  return model;
}

/// ResNet's basic block: two 3x3 convolutions, and a 1x1 projection on the shortcut where the
/// shape changes.
Module basic_block(Builder& builder, std::int64_t in, std::int64_t out, std::int64_t stride) {
  Module block = builder.module("BasicBlock");
  block.register_module("conv1", conv2d(builder, in, out, 3, stride, 1, false));
  block.register_module("bn1", batch_norm2d(builder, out));
  block.register_module("conv2", conv2d(builder, out, out, 3, 1, 1, false));
  block.register_module("bn2", batch_norm2d(builder, out));
  if (stride != 1 || in != out) {
    Module shortcut = builder.module("Shortcut");
    shortcut.register_module("conv", conv2d(builder, in, out, 1, stride, 0, false));
    shortcut.register_module("bn", batch_norm2d(builder, out));
    shortcut.define("def forward(self, x):\n    return self.bn.forward(self.conv.forward(x))\n");
    block.register_module("shortcut", shortcut);
    block.define(R"(
def forward(self, x):
    out = torch.relu(self.bn1.forward(self.conv1.forward(x)))
    out = self.bn2.forward(self.conv2.forward(out))
    return torch.relu(out + self.shortcut.forward(x))
)");
  } else {
    block.define(R"(
def forward(self, x):
    out = torch.relu(self.bn1.forward(self.conv1.forward(x)))
    out = self.bn2.forward(self.conv2.forward(out))
    return torch.relu(out + x)
)");
  }
  return block;
}

Module resnet18(const ModelShape& shape) {
  require_image("resnet18", shape, 8);
  constexpr std::int64_t kBaseWidth = 64;
  Builder builder;
  Module model = builder.module("ResNet18");
  model.register_module("conv1", conv2d(builder, shape.sample_shape[0], kBaseWidth, 3, 1, 1, false));
  model.register_module("bn1", batch_norm2d(builder, kBaseWidth));
  std::int64_t in = kBaseWidth;
  std::string body;
  for (int stage = 0; stage < 4; ++stage) {
    const std::int64_t out = kBaseWidth << stage;
    for (int block = 0; block < 2; ++block) {
      const std::string name = "layer" + std::to_string(stage + 1) + "_" + std::to_string(block);
      model.register_module(name, basic_block(builder, in, out, block == 0 && stage > 0 ? 2 : 1));
      body += "    x = self." + name + ".forward(x)\n";
      in = out;
    }
  }
  model.register_module("fc", linear(builder, in, shape.classes));
  model.define(
      "def forward(self, x):\n    x = torch.relu(self.bn1.forward(self.conv1.forward(x)))\n" + body +
      "    x = torch.flatten(torch.adaptive_avg_pool2d(x, [1, 1]), 1)\n    return self.fc.forward(x)\n");
  return model;
}

/// GPT-2-style initialisation: N(0, 0.02) for embeddings and linear weights, zero biases.
void gpt_initialise(Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& parameter : module.named_parameters()) {
    torch::Tensor value = parameter.value;
    const std::string& name = parameter.name;
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      value.zero_();
    } else if (name.find("ln") == std::string::npos) {
      value.normal_(0.0, 0.02);
    }
  }
}

Module gpt(const ModelShape& shape, const BuiltInModelOptions& options) {
  if (shape.sample_shape.size() != 1 || shape.vocabulary <= 0) {
    throw std::invalid_argument("model 'gpt' takes windows of token ids (data.format = \"tokens\")");
  }
  if (options.width % options.heads != 0) {
    throw std::invalid_argument("model.width " + std::to_string(options.width) +
                                " is not divisible by model.heads " + std::to_string(options.heads));
  }
  const std::int64_t context = shape.sample_shape[0];
  const std::int64_t width = options.width;
  const std::string dropout = std::to_string(options.dropout);
  Builder builder;
  Module model = builder.module("Gpt");
  Module embedding = builder.module("Embedding");
  parameter(embedding, "weight", torch::empty({shape.vocabulary, width}));
  embedding.define("def forward(self, x):\n    return torch.embedding(self.weight, x)\n");
  model.register_module("tokens", embedding);
  parameter(model, "positions", torch::empty({context, width}));
  std::string body;
  for (std::int64_t layer = 0; layer < options.layers; ++layer) {
    Module attention = builder.module("CausalSelfAttention");
    attention.register_module("qkv", linear(builder, width, 3 * width));
    attention.register_module("proj", linear(builder, width, width));
    attention.define(R"(
def forward(self, x):
    n = x.size(0)
    t = x.size(1)
    heads = )" + std::to_string(options.heads) +
                     R"(
    d = )" + std::to_string(width) +
                     R"(
    qkv = self.qkv.forward(x).chunk(3, 2)
    q = qkv[0].view(n, t, heads, d // heads).transpose(1, 2)
    k = qkv[1].view(n, t, heads, d // heads).transpose(1, 2)
    v = qkv[2].view(n, t, heads, d // heads).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(-2, -1)) * ((d // heads) ** -0.5)
    scores = scores + torch.triu(torch.full([t, t], float("-inf"), device=x.device), 1)
    weights = torch.dropout(torch.softmax(scores, -1), )" +
                     dropout + R"(, self.training)
    y = torch.matmul(weights, v).transpose(1, 2).contiguous().view(n, t, d)
    return torch.dropout(self.proj.forward(y), )" +
                     dropout + R"(, self.training)
)");
    Module feed_forward = builder.module("FeedForward");
    feed_forward.register_module("fc", linear(builder, width, 4 * width));
    feed_forward.register_module("proj", linear(builder, 4 * width, width));
    feed_forward.define(
        "def forward(self, x):\n    return "
        "torch.dropout(self.proj.forward(torch.gelu(self.fc.forward(x))), " +
        dropout + ", self.training)\n");
    Module block = builder.module("Block");
    block.register_module("ln1", layer_norm(builder, width));
    block.register_module("attention", attention);
    block.register_module("ln2", layer_norm(builder, width));
    block.register_module("feed_forward", feed_forward);
    block.define(R"(
def forward(self, x):
    x = x + self.attention.forward(self.ln1.forward(x))
    return x + self.feed_forward.forward(self.ln2.forward(x))
)");
    const std::string name = "block" + std::to_string(layer);
    model.register_module(name, block);
    body += "    h = self." + name + ".forward(h)\n";
  }
  model.register_module("ln_f", layer_norm(builder, width));
  model.register_module("head", linear(builder, width, shape.vocabulary, /*bias=*/false));
  model.define("def forward(self, x):\n    h = self.tokens.forward(x) + self.positions[0:x.size(1)]\n" +
               body + "    return self.head.forward(self.ln_f.forward(h))\n");
  gpt_initialise(model);
  return model;
}
}  // namespace

std::vector<std::string> built_in_models() {
  return {"cnn", "mlp", "resnet18", "gpt"};
}

torch::jit::Module build_model(const std::string& name, const ModelShape& shape,
                               const BuiltInModelOptions& options) {
  if (name == "cnn") return cnn(shape);
  if (name == "mlp") return mlp(shape);
  if (name == "resnet18") return resnet18(shape);
  if (name == "gpt") return gpt(shape, options);
  throw std::invalid_argument("unknown model '" + name +
                              "' (built in: cnn, mlp, resnet18, gpt; or set model.path)");
}

}  // namespace filo
