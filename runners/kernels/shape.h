// What the zoo's kernels share about their output's shape: an output shaped like the input but for its last
// dimension (a linear's [..., I] -> [..., O]: aqlm.cpp's two ops, zoo.cpp's linear_q8).
#pragma once

#include <cstdint>

#include <executorch/runtime/kernel/kernel_includes.h>

namespace zoo_shape {

// `out` resized to `input`'s shape with `last` as its last dimension; false where the resize fails.
inline bool resize_last_dim(const executorch::aten::Tensor& input, int64_t last, executorch::aten::Tensor& out) {
  executorch::aten::SizesType sizes[executorch::runtime::kTensorDimensionLimit];
  for (int64_t d = 0; d + 1 < input.dim(); ++d) sizes[d] = input.size(d);
  sizes[input.dim() - 1] = static_cast<executorch::aten::SizesType>(last);
  return executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(input.dim())}) ==
         executorch::runtime::Error::Ok;
}

}  // namespace zoo_shape
