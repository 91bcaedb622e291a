#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("edge_networks_forward", &edge_networks_forward, "edge networks of a step, tiled (forward)");
  m.def("edge_networks_backward", &edge_networks_backward, "edge networks of a step, tiled (backward)");
  m.def("attention_aggregate_forward", &attention_aggregate_forward, "eq. 1b and the sum of eq. 1d (forward)");
  m.def("attention_aggregate_backward", &attention_aggregate_backward, "eq. 1b and the sum of eq. 1d (backward)");
  m.def("generated_product_forward", &generated_product_forward, "the hypernetwork update's generated product (forward)");
  m.def("generated_product_backward", &generated_product_backward, "the hypernetwork update's generated product (backward)");
}
