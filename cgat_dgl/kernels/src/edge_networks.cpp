// The edge networks of one message-passing step, forward and backward, in tiles of whole sender
// blocks: pre = W_e e_ij + R[i] + S[j] (R holds W_i h + b, S holds W_j h), hidden = LeakyReLU(pre),
// out_g = hidden_g W2_g + b2_g for every group g. A tile's (T, H) hidden layer lives in a per-thread
// buffer that stays in cache; the backward recomputes it instead of reading it back from memory,
// so no (E, H) tensor is ever written. Edges come in blocks of K per sender, in sender order; the
// rows of the first groups can be written in another order (the receivers', for the attention).
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

struct Shapes {
  int64_t senders, receivers, edges, hidden, features, groups, group_hidden, block, tile;
};

// Where a tile's edge term W_e e_ij comes from: a product with per-edge features, or rows of a
// table already multiplied by W_e (while the features are a function of the edge's kind).
struct EdgeTerm {
  const float* features;  // (E, F), or nullptr
  const float* weight;    // (H, F), with features
  const float* weight_t;  // its transpose (F, H)
  const float* table;     // (R, H) = rows of W_e e, or nullptr
  const int64_t* row;     // (E,) row of table, with table
};

// hidden = LeakyReLU(W_e e + R[receiver] + S[sender]) for the tile's rows (T x H).
void hidden_layer(float* hidden, const EdgeTerm& edge_term, const float* receiver_term, const float* sender_term,
                  const int64_t* receiver, int64_t first, int64_t rows, const Shapes& s, float slope) {
  const int64_t h = s.hidden;
  const bool table = edge_term.table != nullptr;
  if (!table) {
    tile_gemm(false, false, rows, h, s.features, edge_term.features + first * s.features, s.features,
              edge_term.weight_t, h, 0.0f, hidden, h);
  }
  for (int64_t t = 0; t < rows; ++t) {
    const int64_t edge = first + t;
    const float* r = receiver_term + receiver[edge] * h;
    const float* q = sender_term + (edge / s.block) * h;
    const float* w = table ? edge_term.table + edge_term.row[edge] * h : hidden + t * h;
    float* p = hidden + t * h;
#pragma omp simd
    for (int64_t j = 0; j < h; ++j) {
      const float v = w[j] + r[j] + q[j];
      p[j] = v > 0.0f ? v : v * slope;
    }
  }
}

// The inputs, contiguous and detached; the edge term is (features, weight) or (table, rows).
struct Inputs {
  at::Tensor receiver_term, sender_term, receiver, second_weight, second_bias;
  at::Tensor features, weight, weight_t, table, rows;
  Shapes shapes;

  EdgeTerm edge_term() const {
    if (table.defined()) return {nullptr, nullptr, nullptr, table.data_ptr<float>(), rows.data_ptr<int64_t>()};
    return {features.data_ptr<float>(), weight.data_ptr<float>(), weight_t.data_ptr<float>(), nullptr, nullptr};
  }
};

at::Tensor prepared(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  return t.detach().contiguous();
}

Inputs inputs_of(const EdgeNetworkArgs& a) {
  Inputs in;
  in.receiver_term = prepared(a.receiver_term, "receiver_term");
  in.sender_term = prepared(a.sender_term, "sender_term");
  in.second_weight = prepared(a.second_weight, "second_weight");
  in.second_bias = prepared(a.second_bias, "second_bias");
  in.receiver = a.receiver.to(at::kLong).contiguous();
  Shapes& s = in.shapes;
  const int64_t block = a.block;
  TORCH_CHECK(block > 0, "sender block must be positive");
  s.block = block;
  s.receivers = in.receiver_term.size(0);
  s.senders = in.sender_term.size(0);
  s.edges = in.receiver.size(0);
  s.hidden = in.receiver_term.size(1);
  s.groups = in.second_weight.size(0);
  s.group_hidden = in.second_weight.size(1);
  s.features = in.second_weight.size(2);
  TORCH_CHECK(s.edges == s.senders * block, "edges must come in blocks of ", block, " per sender");
  TORCH_CHECK(s.groups * s.group_hidden == s.hidden && in.sender_term.size(1) == s.hidden,
              "inconsistent edge-network shapes");
  if (a.table.has_value()) {
    TORCH_CHECK(a.rows.has_value() && !a.features.has_value(), "a table edge term takes rows and no features");
    in.table = prepared(*a.table, "edge_table");
    in.rows = a.rows->to(at::kLong).contiguous();
    TORCH_CHECK(in.table.size(1) == s.hidden && in.rows.size(0) == s.edges, "inconsistent edge table");
  } else {
    TORCH_CHECK(a.features.has_value() && a.weight.has_value(), "the edge term needs features and a weight");
    in.features = prepared(*a.features, "edge_features");
    in.weight = prepared(*a.weight, "edge_weight");
    in.weight_t = in.weight.t().contiguous();  // once per call rather than per tile
    TORCH_CHECK(in.features.size(0) == s.edges && in.features.size(1) == s.features &&
                    in.weight.size(0) == s.hidden && in.weight.size(1) == s.features,
                "inconsistent edge features");
  }
  // Tiles of whole sender blocks, about 64k floats (256 KB) of hidden layer each.
  s.tile = block * std::max<int64_t>(1, (int64_t{1} << 16) / (block * s.hidden));
  return in;
}

// Where the rows of the first `groups` groups go: edge e's row is positions[e] (the receiver
// order, which the attention kernel reads in sequence), the others' row is e.
struct Placement {
  at::Tensor positions;
  const int64_t* pos = nullptr;
  int64_t groups = 0;

  Placement(const c10::optional<at::Tensor>& positions_in, int64_t ordered_groups, const Shapes& s) {
    if (!positions_in.has_value()) return;
    positions = positions_in->to(at::kLong).contiguous();
    TORCH_CHECK(positions.numel() == s.edges, "one position per edge");
    TORCH_CHECK(ordered_groups >= 0 && ordered_groups <= s.groups, "ordered groups out of range");
    pos = positions.data_ptr<int64_t>();
    groups = ordered_groups;
  }

  bool applies(int64_t group) const { return pos != nullptr && group < groups; }
  int64_t row(int64_t edge) const { return pos[edge]; }
};

}  // namespace

// The groups' outputs in parts of `part_groups` groups, (part_groups, E, F) each: separate tensors,
// so that the backward takes their gradients as they come (no concatenation, none for unused parts).
std::vector<at::Tensor> edge_networks_forward(const EdgeNetworkArgs& args) {
  const Inputs in = inputs_of(args);
  const int64_t part_groups = args.part_groups;
  const float slope = static_cast<float>(args.slope);
  const Shapes& s = in.shapes;
  const Placement placed(args.positions, args.ordered_groups, s);
  TORCH_CHECK(part_groups > 0 && s.groups % part_groups == 0, "parts must hold whole groups");
  std::vector<at::Tensor> parts;
  std::vector<float*> group_out;
  for (int64_t p = 0; p < s.groups / part_groups; ++p) {
    parts.push_back(at::empty({part_groups, s.edges, s.features}, in.receiver_term.options()));
    for (int64_t g = 0; g < part_groups; ++g) group_out.push_back(parts.back()[g].data_ptr<float>());
  }
  const EdgeTerm edge_term = in.edge_term();
  const float* r = in.receiver_term.data_ptr<float>();
  const float* q = in.sender_term.data_ptr<float>();
  const float* w2 = in.second_weight.data_ptr<float>();
  const float* b2 = in.second_bias.data_ptr<float>();
  const int64_t* rec = in.receiver.data_ptr<int64_t>();
  const int64_t tiles = (s.edges + s.tile - 1) / s.tile, f = s.features, d = s.group_hidden;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> hidden(s.tile * s.hidden), staged(s.tile * f);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * s.tile, count = std::min(s.tile, s.edges - first);
      hidden_layer(hidden.data(), edge_term, r, q, rec, first, count, s, static_cast<float>(slope));
      for (int64_t g = 0; g < s.groups; ++g) {
        const bool placed_g = placed.applies(g);
        float* target = placed_g ? staged.data() : group_out[g] + first * f;
        tile_gemm(false, false, count, f, d, hidden.data() + g * d, s.hidden, w2 + g * d * f, f, 0.0f, target, f,
                  b2 + g * f);
        if (placed_g) {
          for (int64_t t = 0; t < count; ++t) copy_row(target + t * f, f, group_out[g] + placed.row(first + t) * f);
        }
      }
    }
  });
  return parts;
}

// Gradients of (receiver_term, sender_term, second_weight, second_bias, features, weight, table) from
// those of the parts (an empty tensor for a part without one); the edge term's pair that was not
// given is undefined.
std::vector<at::Tensor> edge_networks_backward(const std::vector<at::Tensor>& grad_parts, const EdgeNetworkArgs& args) {
  const Inputs in = inputs_of(args);
  const float slope = static_cast<float>(args.slope);
  const Shapes& s = in.shapes;
  const Placement placed(args.positions, args.ordered_groups, s);
  const EdgeTerm edge_term = in.edge_term();
  const bool by_table = in.table.defined();
  TORCH_CHECK(!grad_parts.empty() && s.groups % static_cast<int64_t>(grad_parts.size()) == 0,
              "parts must hold whole groups");
  const int64_t part_groups = s.groups / static_cast<int64_t>(grad_parts.size());
  std::vector<at::Tensor> grads;
  std::vector<const float*> group_grad;  // nullptr: the group's output has no gradient
  for (const at::Tensor& part : grad_parts) {
    grads.push_back(part.numel() ? part.contiguous() : part);
    TORCH_CHECK(!part.numel() || part.sizes() == at::IntArrayRef({part_groups, s.edges, s.features}),
                "gradient of the wrong shape");
    for (int64_t g = 0; g < part_groups; ++g) group_grad.push_back(part.numel() ? grads.back()[g].data_ptr<float>() : nullptr);
  }
  const auto options = in.receiver_term.options();
  const int threads = at::get_num_threads();
  const int64_t h = s.hidden, d = s.group_hidden, f = s.features;

  // Sender blocks never straddle tiles, so each row of grad_sender has one writer; the receiver,
  // table and weight gradients are summed over per-thread copies.
  at::Tensor grad_sender = at::zeros({s.senders, h}, options);
  at::Tensor grad_receiver = at::zeros({threads, s.receivers, h}, options);
  at::Tensor grad_second = at::zeros({threads, s.groups, d, f}, options);
  at::Tensor grad_bias = at::zeros({threads, s.groups, f}, options);
  at::Tensor grad_features, grad_weight, grad_table;
  if (by_table) {
    grad_table = at::zeros({threads, in.table.size(0), h}, options);
  } else {
    grad_features = at::empty({s.edges, f}, options);
    grad_weight = at::zeros({threads, h, f}, options);
  }

  const float* r = in.receiver_term.data_ptr<float>();
  const float* q = in.sender_term.data_ptr<float>();
  // W2_g^T (F x D) of every group, once rather than per tile.
  const at::Tensor second_t = in.second_weight.transpose(1, 2).contiguous();
  const float* w2t = second_t.data_ptr<float>();
  const int64_t* rec = in.receiver.data_ptr<int64_t>();
  const float a = static_cast<float>(slope);
  const int64_t tiles = (s.edges + s.tile - 1) / s.tile;

  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    const int id = at::get_thread_num();
    const float leak = a;  // a local: read through the capture, it blocks vectorising the loops below
    float* d_receiver = grad_receiver[id].data_ptr<float>();
    float* d_second = grad_second[id].data_ptr<float>();
    float* d_bias = grad_bias[id].data_ptr<float>();
    float* d_sender = grad_sender.data_ptr<float>();
    float* d_table = by_table ? grad_table[id].data_ptr<float>() : nullptr;
    std::vector<float> hidden(s.tile * h), grad_pre(s.tile * h), gathered(s.tile * f);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * s.tile, count = std::min(s.tile, s.edges - first);
      hidden_layer(hidden.data(), edge_term, r, q, rec, first, count, s, a);
      for (int64_t g = 0; g < s.groups; ++g) {
        if (group_grad[g] == nullptr) {
          for (int64_t t = 0; t < count; ++t) std::fill_n(grad_pre.data() + t * h + g * d, d, 0.0f);
          continue;
        }
        const float* dout_g = group_grad[g] + first * f;
        if (placed.applies(g)) {
          for (int64_t t = 0; t < count; ++t) copy_row(group_grad[g] + placed.row(first + t) * f, f, gathered.data() + t * f);
          dout_g = gathered.data();
        }
        // dW2_g += hidden_g^T dout_g; db2_g += sum_t dout_g; dhidden_g = dout_g W2_g^T
        tile_gemm(true, false, d, f, count, hidden.data() + g * d, h, dout_g, f, 1.0f, d_second + g * d * f, f);
        add_row_sums(dout_g, count, f, d_bias + g * f);
        tile_gemm(false, false, count, d, f, dout_g, f, w2t + g * f * d, d, 0.0f, grad_pre.data() + g * d, h);
      }
      // dpre = dhidden * LeakyReLU'(pre); LeakyReLU keeps the sign, so hidden > 0 exactly where pre > 0.
      for (int64_t t = 0; t < count; ++t) {
        const int64_t edge = first + t;
        const float* ht = hidden.data() + t * h;
        float* gt = grad_pre.data() + t * h;
        float* dr = d_receiver + rec[edge] * h;
        float* ds = d_sender + (edge / s.block) * h;
        float* dt = by_table ? d_table + edge_term.row[edge] * h : nullptr;
#pragma omp simd
        for (int64_t j = 0; j < h; ++j) {
          const float v = ht[j] > 0.0f ? gt[j] : gt[j] * leak;
          gt[j] = v;
          dr[j] += v;
          ds[j] += v;
        }
        if (by_table) {
#pragma omp simd
          for (int64_t j = 0; j < h; ++j) dt[j] += gt[j];
        }
      }
      if (!by_table) {
        tile_gemm(false, false, count, f, h, grad_pre.data(), h, edge_term.weight, f, 0.0f,
             grad_features.data_ptr<float>() + first * f, f);
        tile_gemm(true, false, h, f, count, grad_pre.data(), h, edge_term.features + first * f, f, 1.0f,
             grad_weight[id].data_ptr<float>(), f);
      }
    }
  });
  return {grad_receiver.sum(0), grad_sender, grad_second.sum(0), grad_bias.sum(0).view_as(in.second_bias),
          grad_features, by_table ? at::Tensor() : grad_weight.sum(0), by_table ? grad_table.sum(0) : at::Tensor()};
}
