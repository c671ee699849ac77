// `zoo::custom_sdpa.out`: the zoo's attention kernel (sdpa.h) under the name the zoo's exports give it
// (common/nn/attention.py), so the Python runtime runs it as the C++ runners do (library "sdpa" in common/kernels.py);
// and `zoo::update_cache(_with_indices).out` (cache.h), which a float16 cache's program writes with.
// A self-registering kernel file (runners/kernels/README.md).
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>

#include "cache.h"
#include "sdpa.h"

namespace {

constexpr char kCustomSdpa[] = "zoo::custom_sdpa.out";
constexpr char kUpdateCache[] = "zoo::update_cache.out";
constexpr char kUpdateCacheWithIndices[] = "zoo::update_cache_with_indices.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCustomSdpa, EXECUTORCH_FN(zoo_sdpa::custom_sdpa_out, kCustomSdpa)),
    executorch::extension::make_boxed_kernel(kUpdateCache, EXECUTORCH_FN(zoo_cache::update_cache_out, kUpdateCache)),
    executorch::extension::make_boxed_kernel(
        kUpdateCacheWithIndices, EXECUTORCH_FN(zoo_cache::update_cache_with_indices_out, kUpdateCacheWithIndices)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 3}) == executorch::runtime::Error::Ok;

}  // namespace
