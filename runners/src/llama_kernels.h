// Registers our kernels for ExecuTorch's `llama::update_cache.out` and `llama::custom_sdpa.out`.
#pragma once

namespace zoo {

// Idempotent; call before loading a program that uses the ops (Runner::load does).
void register_llama_kernels();

}  // namespace zoo
