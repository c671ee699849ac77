// `zoo::custom_sdpa.out`: the zoo's attention kernel (sdpa.h) under the name the zoo's exports give it
// (common/nn/attention.py), so the Python runtime runs it as the C++ runners do (library "sdpa" in common/kernels.py).
// A self-registering kernel file (runners/kernels/README.md).
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>

#include "sdpa.h"

namespace {

constexpr char kCustomSdpa[] = "zoo::custom_sdpa.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCustomSdpa, EXECUTORCH_FN(zoo_sdpa::custom_sdpa_out, kCustomSdpa)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 1}) == executorch::runtime::Error::Ok;

}  // namespace
