// One AdamW step (torch.optim.AdamW's update, without amsgrad) over every parameter of a group in a
// single call: on CPU the optimiser's cost is otherwise some ten tensor operations per parameter,
// each with its dispatch, for a model of a few hundred small parameters. Per parameter, with the
// step count t incremented first:
//   p <- p (1 - lr wd);  m <- lerp(m, g, 1 - beta1);  v <- beta2 v + (1 - beta2) g^2;
//   p <- p - lr / (1 - beta1^t) m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace {

constexpr int64_t kChunk = 16384;  // elements per task

struct Update {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t numel;
  float decay, avg_weight, beta2, sq_weight, correction2_sqrt, eps, neg_step_size;
};

void check(const at::Tensor& t, const at::Tensor& param, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == param.numel(),
              name, " must be a contiguous float32 CPU tensor of its parameter's size");
}

void apply(const Update& u, int64_t begin, int64_t end) {
  const float decay = u.decay, w1 = u.avg_weight, beta2 = u.beta2, w2 = u.sq_weight;
  const float correction = u.correction2_sqrt, eps = u.eps, neg_step = u.neg_step_size;
#pragma omp simd
  for (int64_t j = begin; j < end; ++j) {
    const float g = u.grad[j];
    const float m = u.exp_avg[j];
    // torch's lerp: self + w (end - self) for |w| < 0.5, else end - (end - self)(1 - w).
    const float avg = w1 < 0.5f ? std::fma(w1, g - m, m) : std::fma(w1 - 1.0f, g - m, g);
    const float sq = u.exp_avg_sq[j] * beta2 + w2 * g * g;
    const float denom = std::sqrt(sq) / correction + eps;
    u.exp_avg[j] = avg;
    u.exp_avg_sq[j] = sq;
    u.param[j] = u.param[j] * decay + neg_step * avg / denom;
  }
}

}  // namespace

void adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
                const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
                const std::vector<at::Tensor>& steps, double lr, double beta1, double beta2, double eps,
                double weight_decay) {
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && exp_avgs.size() == count && exp_avg_sqs.size() == count && steps.size() == count,
              "one gradient, state pair and step per parameter");
  std::vector<Update> updates;
  std::vector<std::pair<size_t, int64_t>> tasks;  // (update, first element)
  for (size_t i = 0; i < count; ++i) {
    const at::Tensor& p = params[i];
    check(p, p, "a parameter");
    check(grads[i], p, "a gradient");
    check(exp_avgs[i], p, "exp_avg");
    check(exp_avg_sqs[i], p, "exp_avg_sq");
    TORCH_CHECK(steps[i].device().is_cpu() && steps[i].scalar_type() == at::kFloat && steps[i].numel() == 1,
                "a step must be a float32 CPU scalar");
    float& step_t = *steps[i].data_ptr<float>();
    step_t += 1.0f;
    const double step = step_t;
    const double step_size = lr / (1.0 - std::pow(beta1, step));
    updates.push_back({p.data_ptr<float>(), grads[i].data_ptr<float>(), exp_avgs[i].data_ptr<float>(),
                       exp_avg_sqs[i].data_ptr<float>(), p.numel(), static_cast<float>(1.0 - lr * weight_decay),
                       static_cast<float>(1.0 - beta1), static_cast<float>(beta2), static_cast<float>(1.0 - beta2),
                       static_cast<float>(std::sqrt(1.0 - std::pow(beta2, step))), static_cast<float>(eps),
                       static_cast<float>(-step_size)});
    for (int64_t first = 0; first < p.numel(); first += kChunk) tasks.emplace_back(i, first);
  }
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const Update& u = updates[tasks[k].first];
      apply(u, tasks[k].second, std::min(u.numel, tasks[k].second + kChunk));
    }
  });
}
