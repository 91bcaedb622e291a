#include <torch/extension.h>

#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The kernels touch no Python object: other Python threads run while they do.
  const auto release = py::call_guard<py::gil_scoped_release>();
  py::class_<EdgeNetworkArgs>(m, "EdgeNetworkArgs", "the tiled edge networks' inputs, by name (kernels.h)")
      .def(py::init<>())
      .def_readwrite("receiver_term", &EdgeNetworkArgs::receiver_term)
      .def_readwrite("sender_term", &EdgeNetworkArgs::sender_term)
      .def_readwrite("receiver", &EdgeNetworkArgs::receiver)
      .def_readwrite("block", &EdgeNetworkArgs::block)
      .def_readwrite("second_weight", &EdgeNetworkArgs::second_weight)
      .def_readwrite("second_bias", &EdgeNetworkArgs::second_bias)
      .def_readwrite("part_groups", &EdgeNetworkArgs::part_groups)
      .def_readwrite("features", &EdgeNetworkArgs::features)
      .def_readwrite("weight", &EdgeNetworkArgs::weight)
      .def_readwrite("table", &EdgeNetworkArgs::table)
      .def_readwrite("rows", &EdgeNetworkArgs::rows)
      .def_readwrite("positions", &EdgeNetworkArgs::positions)
      .def_readwrite("ordered_groups", &EdgeNetworkArgs::ordered_groups)
      .def_readwrite("slope", &EdgeNetworkArgs::slope);
  m.def("edge_networks_forward", &edge_networks_forward, "edge networks of a step, tiled (forward)", release);
  m.def("edge_networks_backward", &edge_networks_backward, "edge networks of a step, tiled (backward)", release);
  m.def("attention_aggregate_forward", &attention_aggregate_forward, "eq. 1b and the sum of eq. 1d (forward)", release);
  m.def("attention_aggregate_backward", &attention_aggregate_backward, "eq. 1b and the sum of eq. 1d (backward)", release);
  m.def("generated_product_forward", &generated_product_forward, "the hypernetwork update's generated product (forward)", release);
  m.def("generated_product_backward", &generated_product_backward, "the hypernetwork update's generated product (backward)", release);
  m.def("head_attention_fcnn_forward", &head_attention_fcnn_forward, "eq. 2b-2d without the residual (forward)", release);
  m.def("head_attention_fcnn_backward", &head_attention_fcnn_backward, "eq. 2b-2d without the residual (backward)", release);
  m.def("indexed_product_forward", &indexed_product_forward, "x_i W[index_i] (forward)", release);
  m.def("indexed_product_backward", &indexed_product_backward, "x_i W[index_i] (backward)", release);
}
