#include "zoo/runner.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>

#include <executorch/devtools/etdump/etdump_flatcc.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>

#include "zoo/cli.h"
#include "zoo/errors.h"
#include "zoo/unicode.h"

// The wheel ships the thread pool's library but not its header: the two functions the runner calls, as declared in
// ExecuTorch's extension/threadpool/threadpool.h.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace zoo {
namespace {

using executorch::extension::from_blob;
using executorch::extension::module::Module;
using EtError = executorch::runtime::Error;
using executorch::runtime::EValue;
using ScalarType = executorch::aten::ScalarType;

// ExecuTorch's log lines are kept (and shown with --verbose); errors are reported from them in one line.
std::vector<std::string> g_logs;
bool g_verbose = false;

void capture_log(et_timestamp_t, et_pal_log_level_t level, const char*, const char*, size_t, const char* message,
                 size_t length) {
  std::string line(message, length);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (g_verbose) std::fprintf(stderr, "[executorch %c] %s\n", static_cast<char>(level), line.c_str());
  if (g_logs.size() < 1000) g_logs.push_back(std::move(line));
}

// The program being loaded or run, for the abort message below.
std::string g_program;

// ExecuTorch's runtime aborts (ET_CHECK) on some malformed programs that pass flatbuffer verification, e.g. a value
// index past the value table: report that in one line, as every other failure, instead of a bare SIGABRT.
[[noreturn]] void runtime_abort() {
  std::string why = g_logs.empty() ? "no reason logged" : g_logs.back();
  print_error(g_program + ": the ExecuTorch runtime stopped on this program (" + why +
              "); the file is corrupt or not a program this runtime can run");
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}

void install_log_capture(bool verbose) {
  static std::once_flag once;
  g_verbose = verbose;
  std::call_once(once, [] {
    executorch::runtime::register_pal(executorch::runtime::PalImpl::create(
        nullptr, runtime_abort, nullptr, nullptr, capture_log, nullptr, nullptr, __FILE__));
  });
}

const char* error_name(EtError e) {
  switch (e) {
    case EtError::Ok: return "Ok";
    case EtError::Internal: return "Internal";
    case EtError::InvalidState: return "InvalidState";
    case EtError::NotSupported: return "NotSupported";
    case EtError::NotImplemented: return "NotImplemented";
    case EtError::InvalidArgument: return "InvalidArgument";
    case EtError::InvalidType: return "InvalidType";
    case EtError::OperatorMissing: return "OperatorMissing";
    case EtError::NotFound: return "NotFound";
    case EtError::MemoryAllocationFailed: return "MemoryAllocationFailed";
    case EtError::AccessFailed: return "AccessFailed";
    case EtError::InvalidProgram: return "InvalidProgram";
    default: return "error";
  }
}

std::string describe(EtError e) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, code 0x%x", error_name(e), static_cast<unsigned>(e));
  return buf;
}

double since_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Why `method` failed to load, in one line.
std::string explain_method_failure(const std::string& path, const std::string& method, EtError err) {
  std::set<std::string> backends, ops;
  for (const std::string& line : g_logs) {
    size_t at = line.find("Backend ");
    if (at != std::string::npos && line.find("is not registered") != std::string::npos) {
      size_t end = line.find(' ', at + 8);
      backends.insert(line.substr(at + 8, end == std::string::npos ? std::string::npos : end - at - 8));
    }
    at = line.find("kernel '");  // "kernel 'ns::op.overload' not found."
    if (at != std::string::npos && line.find("' not found") != std::string::npos)
      ops.insert(line.substr(at + 8, line.find("' not found") - at - 8));
  }
  auto join = [](const std::set<std::string>& items) {
    std::string out;
    for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
  };
  if (!backends.empty())
    return path + " delegates to " + join(backends) + ", which this runner was built without (" + ZOO_BACKEND_NAME +
           " build); use the matching backend build, e.g. make <model>-xnnpack";
  if (!ops.empty()) {
    bool zoo = false;  // the zoo's own kernels (runners/kernels/*.cpp) are in every runner built from this tree
    for (const std::string& op : ops) zoo = zoo || op.rfind("zoo::", 0) == 0;
    return path + " needs operators this runner has no kernels for: " + join(ops) +
           (zoo ? " (kernel libraries in runners/kernels/, e.g. aqlm.cpp for zoo::code2x8_lut_matmat; rebuild the "
                  "runner from this tree: make <model>-<backend>)"
                : "");
  }
  return path + ": cannot load method " + method + " (" + describe(err) + (g_logs.empty() ? "" : "; " + g_logs.back()) +
         ")";
}

}  // namespace

std::unique_ptr<Module> open_program(const std::string& path, const char* contract, int64_t version,
                                     const std::vector<std::string>& methods, bool verbose, bool etdump) {
  install_log_capture(verbose);
  g_program = path;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw zoo::Error(path + ": no such .pte file");
  {
    char head[8] = {};
    std::ifstream f(path, std::ios::binary);
    f.read(head, sizeof head);
    if (f.gcount() < 8 || head[4] != 'E' || head[5] != 'T')
      throw zoo::Error(path + ": not an ExecuTorch program (no 'ET' file identifier)");
  }
  g_logs.clear();
  // share_memory_arenas: methods exported with share_mutable_buffers (forward and forward_embeddings) use one KV
  // cache; without it each method gets its own planned buffers and a prompt prefilled by one is lost to the other.
  std::unique_ptr<executorch::runtime::EventTracer> tracer;
  if (etdump) tracer = std::make_unique<executorch::etdump::ETDumpGen>();
  auto module = std::make_unique<Module>(path, Module::LoadMode::Mmap, std::move(tracer), nullptr, nullptr,
                                         /*share_memory_arenas=*/true);
  // Full flatbuffer verification: a corrupt or hostile file is refused here instead of crashing later (the
  // default, Minimal, checks only the header).
  if (EtError e = module->load(executorch::runtime::Program::Verification::InternalConsistency); e != EtError::Ok)
    throw zoo::Error(path + ": cannot load ExecuTorch program (" + describe(e) +
                     (g_logs.empty() ? "" : "; " + g_logs.back()) + ")");
  auto names = module->method_names();
  if (!names.ok()) throw zoo::Error(path + ": cannot read the program's methods (" + describe(names.error()) + ")");
  // The contract stamp (common/contract.py): a program of another contract is refused by name. An unstamped program
  // with the contract's methods (ExecuTorch's export_llm, for causal_lm) is read as the contract's v1.
  if (names->count("get_contract")) {
    auto name = module->execute("get_contract");
    auto v = module->execute("get_contract_version");
    if (!name.ok() || name->empty() || !(*name)[0].isString() || !v.ok() || v->empty() || !(*v)[0].isInt())
      throw zoo::Error(path + ": unreadable contract stamp (get_contract / get_contract_version)");
    std::string got((*name)[0].toString());
    if (got != contract || (*v)[0].toInt() != version)
      throw zoo::Error(path + ": a " + got + " v" + std::to_string((*v)[0].toInt()) + " program, but this runner drives " +
                       contract + " v" + std::to_string(version));
  }
  std::string missing;
  for (const std::string& m : methods)
    if (!names->count(m)) missing += (missing.empty() ? "" : ", ") + m;
  if (!missing.empty())
    throw zoo::Error(path + ": not a zoo " + contract + " program (missing methods " + missing + ")");
  return module;
}

void write_etdump(Module& module, const std::string& path) {
  auto* gen = static_cast<executorch::etdump::ETDumpGen*>(module.event_tracer());
  if (gen == nullptr) throw zoo::Error("--etdump " + path + ": the program was not loaded with an ETDump recorder");
  executorch::etdump::ETDumpResult result = gen->get_etdump_data();
  if (result.buf == nullptr || result.size == 0) throw zoo::Error("--etdump " + path + ": nothing was recorded");
  std::string bytes(static_cast<const char*>(result.buf), result.size);
  std::free(result.buf);
  write_file_arg(path, bytes, "--etdump");
}

void set_cpu_threads(uint32_t n) {
  if (!executorch::extension::threadpool::get_threadpool()->_unsafe_reset_threadpool(n))
    throw zoo::Error("--cpu-threads " + std::to_string(n) + ": ExecuTorch's thread pool could not be resized");
}

void load_method(Module& module, const std::string& path, const std::string& method) {
  g_program = path;
  if (EtError e = module.load_method(method); e != EtError::Ok)
    throw zoo::Error(explain_method_failure(path, method, e));
}

std::vector<EValue> execute(Module& module, const std::string& path, const std::string& method,
                            const std::vector<EValue>& inputs, const std::string& what) {
  g_program = path;
  auto out = module.execute(method, inputs);
  if (!out.ok())
    throw zoo::Error(path + ": " + method + " failed" + (what.empty() ? "" : " " + what) + " (" + describe(out.error()) +
                     (g_logs.empty() ? "" : "; " + g_logs.back()) + ")");
  return std::move(*out);
}

int64_t constant_int(Module& module, const std::string& path, const std::string& name, int64_t fallback) {
  auto names = module.method_names();
  if (!names.ok() || !names->count(name)) return fallback;
  auto out = module.execute(name);
  if (!out.ok() || out->empty()) throw zoo::Error(path + ": cannot run constant method " + name);
  const EValue& v = (*out)[0];
  if (v.isInt()) return v.toInt();
  if (v.isBool()) return v.toBool() ? 1 : 0;
  throw zoo::Error(path + ": constant method " + name + " does not return an int");
}

Runner::~Runner() = default;

std::unique_ptr<Runner> Runner::load(const std::string& path, bool verbose, bool etdump) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Runner> r(new Runner());
  r->path_ = path;
  r->module_ = open_program(path, kContractName, kContractVersion,
                            {"forward", "get_max_seq_len", "get_max_context_len", "get_eos_ids"}, verbose, etdump);
  load_method(*r->module_, path, "forward");
  r->load_ms_ = since_ms(t0);

  Module& mod = *r->module_;
  ModelMetadata& m = r->meta_;
  m.max_seq_len = constant_int(mod, path, "get_max_seq_len", 0);
  m.max_context_len = constant_int(mod, path, "get_max_context_len", 0);
  m.bos_id = constant_int(mod, path, "get_bos_id", -1);
  m.vocab_size = constant_int(mod, path, "get_vocab_size", 0);
  m.n_layers = constant_int(mod, path, "get_n_layers", 0);
  m.use_kv_cache = constant_int(mod, path, "use_kv_cache", 1) != 0;
  m.enable_dynamic_shape = constant_int(mod, path, "enable_dynamic_shape", 1) != 0;
  if (auto names = mod.method_names(); names.ok() && names->count("get_attention_sink")) m.attention_sink = true;
  auto eos = mod.execute("get_eos_ids");
  if (!eos.ok()) throw zoo::Error(path + ": cannot run constant method get_eos_ids");
  for (const EValue& v : *eos)
    if (v.isInt()) m.eos_ids.push_back(v.toInt());
  if (m.max_seq_len < 1 || m.max_context_len < m.max_seq_len)
    throw zoo::Error(path + ": bad contract metadata (get_max_seq_len " + std::to_string(m.max_seq_len) +
                     ", get_max_context_len " + std::to_string(m.max_context_len) + ")");
  if (!m.use_kv_cache) throw zoo::Error(path + ": exported without a KV cache (use_kv_cache is false)");
  if (!m.enable_dynamic_shape) m.max_seq_len = 1;  // static [1, 1] tokens: prefill one token at a time
  if (auto meta = mod.method_meta("forward_embeddings"); meta.ok()) {  // [1, S, hidden] embeddings, input_pos
    auto in = meta->input_tensor_meta(0);
    if (!in.ok() || in->sizes().size() != 3 || in->scalar_type() != ScalarType::Float)
      throw zoo::Error(path + ": forward_embeddings does not take float32 embeddings [1, S, hidden]");
    m.embeddings_dim = in->sizes()[2];
  }
  return r;
}

bool Runner::is_eos(int64_t token) const {
  for (int64_t e : meta_.eos_ids)
    if (e == token) return true;
  return false;
}

const std::vector<float>& Runner::take_logits(const std::vector<EValue>& out, const char* method) {
  if (out.empty() || !out[0].isTensor()) throw zoo::Error(path_ + ": " + method + " returned no logits tensor");
  const auto& t = out[0].toTensor();
  if (t.scalar_type() != ScalarType::Float) throw zoo::Error(path_ + ": " + method + " returned non-float32 logits");
  int64_t vocab = t.size(t.dim() - 1);
  const float* data = t.const_data_ptr<float>() + (t.numel() - vocab);  // last position
  logits_.assign(data, data + vocab);
  return logits_;
}

const std::vector<float>& Runner::forward(const int64_t* tokens, size_t n, int64_t start) {
  auto tok = from_blob(const_cast<int64_t*>(tokens), {1, static_cast<int>(n)}, ScalarType::Long);
  int64_t pos = start;
  auto pos_t = from_blob(&pos, {1}, ScalarType::Long);
  return take_logits(execute(*module_, path_, "forward", {EValue(*tok), EValue(*pos_t)},
                             "at position " + std::to_string(start)),
                     "forward");
}

void Runner::load_embeddings_method() {
  if (embeddings_loaded_) return;
  if (meta_.embeddings_dim == 0)
    throw zoo::Error(path_ + ": the program takes no input embeddings (export it with --embeddings-input)");
  auto t0 = std::chrono::steady_clock::now();
  load_method(*module_, path_, "forward_embeddings");
  load_ms_ += since_ms(t0);  // a load cost, kept out of the first prefill's time
  embeddings_loaded_ = true;
}

const std::vector<float>& Runner::forward_embeddings(const float* emb, size_t n, int64_t start) {
  load_embeddings_method();
  auto x = from_blob(const_cast<float*>(emb), {1, static_cast<int>(n), static_cast<int>(meta_.embeddings_dim)},
                     ScalarType::Float);
  int64_t pos = start;
  auto pos_t = from_blob(&pos, {1}, ScalarType::Long);
  return take_logits(execute(*module_, path_, "forward_embeddings", {EValue(*x), EValue(*pos_t)},
                             "at position " + std::to_string(start)),
                     "forward_embeddings");
}

void Runner::check_prompt(size_t n, int64_t start) const {
  if (n == 0) throw zoo::Error("the prompt is empty");
  if (!meta_.attention_sink && start + static_cast<int64_t>(n) >= meta_.max_context_len)
    throw zoo::Error("prompt is " + std::to_string(start + static_cast<int64_t>(n)) + " tokens but " + path_ +
                     " holds a context of " + std::to_string(meta_.max_context_len) +
                     " (shorten the prompt or export with a larger --max-context-len)");
}

GenerationStats Runner::generate(const std::vector<int64_t>& prompt, Sampler& sampler, const GenerateOptions& options,
                                 const std::function<void(int64_t)>& on_token) {
  auto prefill = [&](int64_t i, int64_t len) -> const std::vector<float>& {
    return forward(prompt.data() + i, static_cast<size_t>(len), options.start + i);
  };
  if (options.seen) options.seen->add(prompt);
  return run(static_cast<int64_t>(prompt.size()), prefill, sampler, options, on_token);
}

GenerationStats Runner::generate_from_embeddings(const std::vector<float>& embeddings, Sampler& sampler,
                                                 const GenerateOptions& options,
                                                 const std::function<void(int64_t)>& on_token) {
  load_embeddings_method();
  const int64_t dim = meta_.embeddings_dim;
  if (embeddings.size() % dim != 0)
    throw zoo::Error("the prompt embeddings hold " + std::to_string(embeddings.size()) +
                     " floats, not a whole number of rows of " + std::to_string(dim) + " (the hidden size of " + path_ +
                     ")");
  auto prefill = [&](int64_t i, int64_t len) -> const std::vector<float>& {
    return forward_embeddings(embeddings.data() + i * dim, static_cast<size_t>(len), options.start + i);
  };
  return run(static_cast<int64_t>(embeddings.size()) / dim, prefill, sampler, options, on_token);
}

GenerationStats Runner::run(int64_t n, const Prefill& prefill, Sampler& sampler, const GenerateOptions& options,
                            const std::function<void(int64_t)>& on_token) {
  check_prompt(static_cast<size_t>(n), options.start);
  GenerationStats stats;
  stats.load_ms = load_ms_;
  stats.prompt_tokens = n;
  SeenTokens own;
  SeenTokens& seen = options.seen ? *options.seen : own;
  auto t0 = std::chrono::steady_clock::now();
  const std::vector<float>* logits = nullptr;
  for (int64_t i = 0; i < n; i += meta_.max_seq_len) logits = &prefill(i, std::min(meta_.max_seq_len, n - i));
  stats.prefill_s = since_ms(t0) / 1000;
  int64_t pos = options.start + n;
  auto t1 = std::chrono::steady_clock::now();
  while (true) {
    int64_t token = sampler(logits->data(), static_cast<int64_t>(logits->size()), seen.ids());
    if (stats.generated_tokens++ == 0) stats.first_token_ms = since_ms(t0);
    seen.add(token);
    if (on_token) on_token(token);
    if (options.interrupt && *options.interrupt) {
      stats.interrupted = true;
      break;
    }
    if ((!options.ignore_eos && is_eos(token)) || stats.generated_tokens >= options.max_new_tokens ||
        (pos >= meta_.max_context_len && !meta_.attention_sink))
      break;
    logits = &forward(&token, 1, pos);
    ++pos;
  }
  stats.decode_s = since_ms(t1) / 1000;
  return stats;
}

std::string TextStream::push(int64_t id) {
  pending_ += bytes_of_(id);
  size_t cut = unicode::complete_utf8_prefix(pending_);
  std::vector<uint32_t> cps = unicode::decode_utf8(std::string_view(pending_).substr(0, cut));  // bad bytes -> U+FFFD
  pending_.erase(0, cut);
  return unicode::encode_utf8(cps.data(), cps.size());
}

std::string TextStream::flush() {
  std::string out;
  if (!pending_.empty()) out = "\xEF\xBF\xBD";  // U+FFFD for an unfinished character
  pending_.clear();
  return out;
}

double peak_rss_mib() {
  // VmHWM: the high-water mark of this process's own memory map. getrusage's ru_maxrss survives fork + exec, so a
  // runner started by a bigger process (a Python harness) would report that process's peak instead.
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // Linux reports KiB
}

}  // namespace zoo
