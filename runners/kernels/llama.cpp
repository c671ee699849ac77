// Kernels for ExecuTorch's `llama::update_cache.out`, `llama::update_cache_with_indices.out` and
// `llama::custom_sdpa.out`, which the pip wheel's C++ SDK lacks (its own live in a library that needs libtorch).
// With them the C++ runner runs `.pte` files that name ExecuTorch's llama custom ops, as the Python runtime does.
// The attention kernel is the zoo's own (sdpa.h), also registered as `zoo::custom_sdpa.out` by sdpa.cpp.
//
// The cache writers are cache.h's (ExecuTorch's semantics, op_update_cache.cpp, for the way the zoo calls them).
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, it
// registers its kernels before main. Declared for Python in common/kernels.py (library "llama").
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>

#include "cache.h"
#include "sdpa.h"

namespace {

using executorch::runtime::Error;

constexpr char kUpdateCache[] = "llama::update_cache.out";
constexpr char kUpdateCacheWithIndices[] = "llama::update_cache_with_indices.out";
constexpr char kCustomSdpa[] = "llama::custom_sdpa.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kUpdateCache, EXECUTORCH_FN(zoo_cache::update_cache_out, kUpdateCache)),
    executorch::extension::make_boxed_kernel(
        kUpdateCacheWithIndices, EXECUTORCH_FN(zoo_cache::update_cache_with_indices_out, kUpdateCacheWithIndices)),
    executorch::extension::make_boxed_kernel(kCustomSdpa, EXECUTORCH_FN(zoo_sdpa::custom_sdpa_out, kCustomSdpa)),
};
// Nothing else in the runner registers these names (ExecuTorch aborts on a duplicate registration).
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 3}) == Error::Ok;

}  // namespace
