// Load a zoo `.pte` (forward(tokens [1,S], input_pos [1]) -> logits [1,1,V], KV cache inside the program,
// constant methods get_max_seq_len, get_eos_ids, ...) with ExecuTorch's Module and generate from it.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "zoo/sampler.h"

namespace executorch::extension::module {
class Module;
}
namespace executorch::runtime {
class EValue;
}

namespace zoo {

// The contract this runner drives, as stamped in the program (common/contract.py CAUSAL_LM).
inline constexpr const char* kContractName = "causal_lm";
inline constexpr int64_t kContractVersion = 1;

using executorch::extension::module::Module;

// Open a zoo program the way every runner does: file checks, full flatbuffer verification, ExecuTorch's log
// captured, the contract stamp (get_contract / get_contract_version) checked against `contract` v`version` (an
// unstamped program passes on its methods alone), every name in `methods` present. Throws zoo::Error, one line.
// `etdump`: record an ETDump (per-operator events) for write_etdump.
std::unique_ptr<Module> open_program(const std::string& path, const char* contract, int64_t version,
                                     const std::vector<std::string>& methods, bool verbose = false, bool etdump = false);
// Write the ETDump `module` (opened with etdump) recorded so far to `path`, atomically; zoo::Error on failure.
void write_etdump(Module& module, const std::string& path);
// Resize ExecuTorch's shared thread pool (its kernels and delegates parallelize over it) to `n` threads.
void set_cpu_threads(uint32_t n);
// Load `method`; a missing delegate or kernel is named in the zoo::Error.
void load_method(Module& module, const std::string& path, const std::string& method);
// Run `method`, throwing zoo::Error (with `what`, e.g. "at position 12", and ExecuTorch's last log line) on failure.
std::vector<executorch::runtime::EValue> execute(Module& module, const std::string& path, const std::string& method,
                                                 const std::vector<executorch::runtime::EValue>& inputs,
                                                 const std::string& what = "");
// An int (or bool) constant method; `fallback` when the program has no such method.
int64_t constant_int(Module& module, const std::string& path, const std::string& name, int64_t fallback);

struct ModelMetadata {  // the .pte contract's constant methods
  int64_t max_seq_len = 0;
  int64_t max_context_len = 0;
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;
  int64_t vocab_size = 0;
  int64_t n_layers = 0;
  bool use_kv_cache = true;
  bool enable_dynamic_shape = true;
  int64_t embeddings_dim = 0;  // hidden size of forward_embeddings' input; 0: the program has no such method
  bool attention_sink = false;  // get_attention_sink: positions run on past the context (export --attention-sink)
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  bool ignore_eos = false;  // run on to max_new_tokens or the context end (benchmarks)
  int64_t start = 0;        // the prompt's first position: the cache already holds 0..start (a chat's earlier turns)
  SeenTokens* seen = nullptr;  // the context's distinct ids (repetition penalty): the prompt and reply are added
  const volatile std::sig_atomic_t* interrupt = nullptr;  // non-zero (Ctrl-C): the reply ends after this token
};

struct GenerationStats {
  double load_ms = 0;  // program + forward method load
  double first_token_ms = 0;  // from the start of prefill to the first sampled token
  bool interrupted = false;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // the stop token included, when hit
  double prefill_s = 0, decode_s = 0;
  double prefill_tps() const { return prefill_s > 0 ? prompt_tokens / prefill_s : 0; }
  double decode_tps() const {  // the first token comes from prefill
    return decode_s > 0 && generated_tokens > 1 ? (generated_tokens - 1) / decode_s : 0;
  }
};

class Runner {
 public:
  // Throws zoo::Error with one line naming the file and the reason (missing, not a .pte, needs llama custom
  // ops, delegate or operators not built in, not a zoo program).
  static std::unique_ptr<Runner> load(const std::string& pte_path, bool verbose = false, bool etdump = false);
  void write_etdump(const std::string& path) { zoo::write_etdump(*module_, path); }
  ~Runner();

  const ModelMetadata& metadata() const { return meta_; }
  const std::string& path() const { return path_; }
  double load_ms() const { return load_ms_; }
  bool is_eos(int64_t token) const;

  // Throws zoo::Error (with the limit) when a prompt of `n` tokens fed from position `start` cannot be run: empty,
  // or not ending before the context does.
  void check_prompt(size_t n, int64_t start = 0) const;

  // Logits of the last position after feeding `tokens` at positions start.. (at most max_seq_len tokens).
  const std::vector<float>& forward(const int64_t* tokens, size_t n, int64_t start);
  // The same from input embeddings `emb` [n, embeddings_dim] (the contract's optional forward_embeddings, sharing
  // forward's KV cache). Throws zoo::Error when the program has no forward_embeddings.
  const std::vector<float>& forward_embeddings(const float* emb, size_t n, int64_t start);

  // Chunked prefill (max_seq_len per call) from position `options.start`, then sample/decode until an EOS id,
  // `max_new_tokens`, the end of the context or an interrupt; `on_token` sees each generated id (stop token
  // included). Refuses a prompt that does not fit the context with its limit in the message.
  GenerationStats generate(const std::vector<int64_t>& prompt, Sampler& sampler, const GenerateOptions& options,
                           const std::function<void(int64_t)>& on_token);
  // The same with the prompt given as embeddings [n, embeddings_dim] row-major (e.g. a Stained Glass Transform's
  // output): prefilled through forward_embeddings, then decoded with token ids.
  GenerationStats generate_from_embeddings(const std::vector<float>& embeddings, Sampler& sampler,
                                           const GenerateOptions& options, const std::function<void(int64_t)>& on_token);

 private:
  Runner() = default;
  // prefill(start, n) feeds prompt positions start..start+n and returns the last logits
  using Prefill = std::function<const std::vector<float>&(int64_t, int64_t)>;
  GenerationStats run(int64_t n, const Prefill& prefill, Sampler& sampler, const GenerateOptions& options,
                      const std::function<void(int64_t)>& on_token);
  const std::vector<float>& take_logits(const std::vector<executorch::runtime::EValue>& out, const char* method);
  void load_embeddings_method();  // on first use (its delegate's set-up is a load cost: added to load_ms)
  bool embeddings_loaded_ = false;
  std::unique_ptr<executorch::extension::module::Module> module_;
  std::string path_;
  ModelMetadata meta_;
  double load_ms_ = 0;
  std::vector<float> logits_;
};

// Incremental detokenizer: push ids, get back only complete UTF-8 text (partial characters are held).
class TextStream {
 public:
  explicit TextStream(std::function<const std::string&(int64_t)> bytes_of) : bytes_of_(std::move(bytes_of)) {}
  std::string push(int64_t id);
  std::string flush();  // what is held back; an incomplete character comes out as U+FFFD

 private:
  std::function<const std::string&(int64_t)> bytes_of_;
  std::string pending_;
};

// Peak resident set size of this process in MiB.
double peak_rss_mib();

}  // namespace zoo
