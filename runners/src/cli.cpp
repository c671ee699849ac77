#include "zoo/cli.h"

#include <algorithm>
#include <limits>
#include <cerrno>
#include <csignal>
#include <iostream>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <unistd.h>

#include "zoo/errors.h"
#include "zoo/runner.h"
#include "zoo/sampler.h"
#include "zoo/chat.h"
#include "zoo/tokenizer.h"
#include "zoo/unicode.h"

namespace zoo {

void add_standard_options(ArgParser& args, CliOptions& o, const std::string& model) {
  o.prompt = "The capital of France is";
  args.option("--model", &o.model, "FILE.pte", "exported .pte (python -m models." + model + ".export)");
  args.option("--tokenizer", &o.tokenizer, "FILE", "tokenizer.json or its directory (default: beside the .pte)");
  args.option("--prompt", &o.prompt, "TEXT", "prompt text (default: \"The capital of France is\")");
  args.option("--prompt-file", &o.prompt_file, "FILE", "read the prompt from a file (instead of --prompt)");
  args.option("--prompt-ids", &o.prompt_ids, "FILE", "token ids to feed as they are (instead of a text prompt)");
  args.option("--embeddings", &o.embeddings, "FILE",
              "prompt as float32 embeddings [S, hidden], raw row-major (numpy's tofile), e.g. an SGT's output; "
              "needs a .pte exported with --embeddings-input");
  args.flag("--chat", &o.chat, "wrap the prompt in the model's chat template (ChatML, Llama 3 or Gemma format)");
  args.option("--system", &o.system, "TEXT", "system message (with --chat)");
  args.flag("--interactive", &o.interactive,
            "chat: one user turn per stdin line, the KV cache kept between turns (only the new turn is prefilled); "
            "Ctrl-C ends a reply, end of input the chat");
  args.option("--max-new-tokens", &o.max_new_tokens, "N", "most tokens to generate (default 64; 256 per reply with "
                                                          "--interactive)");
  args.option("--temperature", &o.temperature, "T", "0 = greedy (default)");
  args.option("--top-p", &o.top_p, "P", "nucleus sampling mass (default 1 = off)");
  args.option("--top-k", &o.top_k, "K", "keep the K likeliest tokens (default 0 = off)");
  args.option("--min-p", &o.min_p, "P", "keep tokens at least P times as likely as the likeliest (default 0 = off)");
  args.option("--repetition-penalty", &o.repetition_penalty, "R",
              "divide a positive logit (multiply a negative one) of each token in the context by R, once (default 1)");
  args.option("--seed", &o.seed, "S", "sampling seed (default 0; Python's inference picks the same tokens)");
  args.option("--cpu-threads", &o.cpu_threads, "N", "threads in ExecuTorch's thread pool (default: the machine's)");
  args.flag("--warmup", &o.warmup, "run the prompt once, untimed, before the timed run");
  args.option("--stats-json", &o.stats_json, "FILE",
              "write load time, time to first token, prefill/decode tok/s and peak RSS as JSON");
  args.option("--etdump", &o.etdump, "FILE", "write an ETDump (per-operator profile) of the run");
  args.flag("--tokenize-only", &o.tokenize_only, "print the prompt's token ids and exit");
  args.flag("--ignore-eos", &o.ignore_eos, "do not stop at an end-of-sequence token (benchmarks)");
  args.flag("--print-ids", &o.print_ids, "print the generated token ids instead of text");
  args.flag("--verbose", &o.verbose, "show ExecuTorch's log lines");
}

ArgParser::ArgParser(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

void ArgParser::flag(const std::string& name, bool* out, const std::string& help) {
  specs_.push_back({name, "", help, Spec::Flag, out});
}
void ArgParser::toggle(const std::string& name, std::optional<bool>* out, const std::string& help) {
  specs_.push_back({name, "", help, Spec::Toggle, out});
}
void ArgParser::option(const std::string& name, std::string* out, const std::string& metavar, const std::string& help) {
  specs_.push_back({name, metavar, help, Spec::String, out});
}
void ArgParser::option(const std::string& name, int64_t* out, const std::string& metavar, const std::string& help) {
  specs_.push_back({name, metavar, help, Spec::Int, out});
}
void ArgParser::option(const std::string& name, double* out, const std::string& metavar, const std::string& help) {
  specs_.push_back({name, metavar, help, Spec::Float, out});
}

std::string ArgParser::usage_line() const {
  return "usage: " + program_ + " --model FILE.pte [options]  (--help lists them)";
}

std::string ArgParser::usage() const {
  std::ostringstream s;
  s << "usage: " << program_ << " --model FILE.pte [options]\n\n" << description_ << "\n\noptions:\n";
  for (const Spec& spec : specs_) {
    std::string left = spec.kind == Spec::Toggle ? spec.name + ", --no-" + spec.name.substr(2)
                                                 : spec.name + (spec.metavar.empty() ? "" : " " + spec.metavar);
    s << "  " << left;
    s << std::string(left.size() < 26 ? 26 - left.size() : 1, ' ') << spec.help << "\n";
  }
  s << "  --help                    show this help\n";
  return s.str();
}

int ArgParser::parse(int argc, char** argv) {
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s\n", usage_line().c_str());
    print_error(why);
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool has_value = false;
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage().c_str(), stdout);
      return 0;
    }
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq), has_value = true;
    }
    const Spec* spec = nullptr;
    bool negated = false;
    for (const Spec& s : specs_) {
      if (s.name == arg) spec = &s;
      else if (s.kind == Spec::Toggle && arg == "--no-" + s.name.substr(2)) spec = &s, negated = true;
    }
    if (!spec) return fail("unknown argument " + arg);
    if (spec->kind == Spec::Flag || spec->kind == Spec::Toggle) {
      if (has_value) return fail(arg + " takes no value");
      if (spec->kind == Spec::Flag) *static_cast<bool*>(spec->out) = true;
      else *static_cast<std::optional<bool>*>(spec->out) = !negated;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return fail(arg + " expects a value (" + spec->metavar + ")");
      value = argv[++i];
    }
    char* end = nullptr;
    errno = 0;
    if (spec->kind == Spec::String) {
      *static_cast<std::string*>(spec->out) = value;
    } else if (spec->kind == Spec::Int) {
      long long v = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end || errno) return fail(arg + " expects an integer, got '" + value + "'");
      *static_cast<int64_t*>(spec->out) = v;
    } else {
      double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end || errno || !std::isfinite(v)) return fail(arg + " expects a number, got '" + value + "'");
      *static_cast<double*>(spec->out) = v;
    }
  }
  return -1;
}

std::string dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

std::string read_file_arg(const std::string& path, const char* flag) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw Error(std::string(flag) + " " + path + (std::filesystem::exists(path, ec) ? ": not a file" : ": no such file"));
  std::ifstream f(path, std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  if (!f.is_open() || f.bad()) throw Error(std::string(flag) + " " + path + ": cannot read it");
  return text;
}

void write_file_arg(const std::string& path, const std::string& bytes, const char* flag) {
  std::string tmp = path + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(std::string(flag) + " " + path + ": cannot write it");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(std::string(flag) + " " + path + ": cannot write it");
  }
}

namespace {

std::string base_name(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void validate(const CliOptions& o, bool client_step) {
  if (o.tokenize_only || client_step ? o.tokenizer.empty() && o.model.empty() : o.model.empty())
    throw UsageError(o.tokenize_only ? "--tokenize-only needs --tokenizer (or --model, to use the one beside it)"
                     : client_step   ? "--tokenizer (or --model, to use the one beside it) is required"
                                     : "--model is required");
  if (o.max_new_tokens < 1) throw UsageError("--max-new-tokens must be >= 1");
  if (o.temperature < 0) throw UsageError("--temperature must be >= 0");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw UsageError("--top-p must be in (0, 1]");
  if (o.top_k < 0) throw UsageError("--top-k must be >= 0");
  if (!(o.min_p >= 0 && o.min_p <= 1)) throw UsageError("--min-p must be in [0, 1]");
  if (!(o.repetition_penalty > 0)) throw UsageError("--repetition-penalty must be > 0");
  if (o.cpu_threads < 0) throw UsageError("--cpu-threads must be >= 0 (0 = ExecuTorch's default)");
  if (o.interactive && (!o.prompt_file.empty() || !o.prompt_ids.empty() || !o.embeddings.empty() || o.tokenize_only ||
                        o.print_ids || client_step))
    throw UsageError("--interactive reads its turns from stdin: it cannot go with --prompt-file, --prompt-ids, "
                     "--embeddings, --tokenize-only or --print-ids");
  if (!o.prompt_ids.empty() && (o.chat || !o.prompt_file.empty() || o.tokenize_only))
    throw UsageError("--prompt-ids replaces the prompt: it cannot go with --chat, --prompt-file or --tokenize-only");
  if (!o.embeddings.empty() && (o.chat || !o.prompt_file.empty() || o.tokenize_only || !o.prompt_ids.empty()))
    throw UsageError("--embeddings replaces the prompt: it cannot go with --chat, --prompt-file, --prompt-ids or "
                     "--tokenize-only");
  if (!o.chat && !o.interactive && (!o.system.empty() || o.enable_thinking.has_value()))
    throw UsageError("--system and --enable-thinking need --chat");
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

SamplerConfig sampler_config(const CliOptions& o) {
  return SamplerConfig{static_cast<float>(o.temperature), o.top_p,
                       // a K past INT_MAX keeps every token, as any K >= the vocabulary does (no wrap to 1)
                       static_cast<int>(std::min<int64_t>(o.top_k, std::numeric_limits<int>::max())),
                       static_cast<uint64_t>(o.seed), o.min_p, static_cast<float>(o.repetition_penalty)};
}

// Ctrl-C during a reply (--interactive) ends the reply; SIGINT's default action comes back after it.
volatile std::sig_atomic_t g_interrupted = 0;

struct InterruptScope {
  struct sigaction previous {};
  InterruptScope() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_interrupted = 1; };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &previous);
  }
  ~InterruptScope() { sigaction(SIGINT, &previous, nullptr); }
};

struct TurnStats {
  GenerationStats gen;
  int64_t reused = 0;  // prompt tokens already in the cache
};

void write_stats(const std::string& path, const std::string& model, double load_ms, const std::vector<TurnStats>& turns) {
  char buf[512];
  std::string json = "{\n  \"model\": \"" + json_escape(model) + "\",\n";
  std::snprintf(buf, sizeof buf, "  \"load_ms\": %.3f,\n  \"peak_rss_mib\": %.3f,\n  \"turns\": [", load_ms,
                peak_rss_mib());
  json += buf;
  for (size_t i = 0; i < turns.size(); ++i) {
    const GenerationStats& g = turns[i].gen;
    std::snprintf(buf, sizeof buf,
                  "%s\n    {\"prompt_tokens\": %lld, \"reused_tokens\": %lld, \"first_token_ms\": %.3f, "
                  "\"prefill_tok_s\": %.3f, \"generated_tokens\": %lld, \"decode_tok_s\": %.3f, \"interrupted\": %s}",
                  i ? "," : "", static_cast<long long>(g.prompt_tokens), static_cast<long long>(turns[i].reused),
                  g.first_token_ms, g.prefill_tps(), static_cast<long long>(g.generated_tokens), g.decode_tps(),
                  g.interrupted ? "true" : "false");
    json += buf;
  }
  json += "\n  ]\n}\n";
  write_file_arg(path, json, "--stats-json");
}

// --stats-json and --etdump, after the run.
void finish(const CliOptions& o, Runner& runner, const std::vector<TurnStats>& turns) {
  if (!o.stats_json.empty()) {
    write_stats(o.stats_json, base_name(o.model), runner.load_ms(), turns);
    std::fprintf(stderr, "wrote %s\n", o.stats_json.c_str());
  }
  if (!o.etdump.empty()) {
    runner.write_etdump(o.etdump);
    std::fprintf(stderr, "wrote %s\n", o.etdump.c_str());
  }
}

size_t common_prefix(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// --interactive: each turn renders the whole conversation as a from-scratch run would and prefills only what the
// cache does not hold (the ids after the longest common prefix with what was fed); common/session.py does the same.
int run_interactive(const CliOptions& o, Runner& runner, const Tokenizer& tokenizer) {
  const ModelMetadata& meta = runner.metadata();
  ChatOptions chat{o.system, o.enable_thinking};
  Sampler sampler(sampler_config(o));
  std::vector<ChatMessage> messages;
  std::vector<int64_t> cached;  // ids whose keys/values the cache holds at positions 0..
  std::vector<TurnStats> turns;
  const bool tty = ::isatty(0);
  for (std::string line;;) {
    if (tty) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::vector<ChatMessage> next = messages;
    next.push_back({"user", line});
    std::vector<int64_t> ids = tokenizer.encode(render_chat(tokenizer, next, chat), false);
    bool fresh = false;
    if (static_cast<int64_t>(ids.size()) >= meta.max_context_len && !meta.attention_sink) {  // start over from this message
      next = {next.back()}, cached.clear(), fresh = true;
      ids = tokenizer.encode(render_chat(tokenizer, next, chat), false);
      if (static_cast<int64_t>(ids.size()) >= meta.max_context_len) {
        print_error("this message is " + std::to_string(ids.size()) + " tokens with the chat template, and the "
                    "context holds " + std::to_string(meta.max_context_len) + ": shorten it");
        continue;
      }
    }
    size_t keep = std::min(common_prefix(cached, ids), ids.size() - 1);  // at least one token fed, for its logits
    // a sliding-window layer's ring keeps max_seq_len - 1 positions beyond its window: a longer rewind starts over
    if (static_cast<int64_t>(cached.size() - keep) >= meta.max_seq_len) keep = 0;
    std::vector<int64_t> prompt(ids.begin() + static_cast<std::ptrdiff_t>(keep), ids.end());
    SeenTokens seen;
    seen.add(ids);
    TextStream stream([&](int64_t id) -> const std::string& { return tokenizer.token_bytes(id); });
    std::vector<int64_t> generated;
    auto on_token = [&](int64_t token) {
      generated.push_back(token);
      if (runner.is_eos(token)) return;
      std::string text = stream.push(token);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
    TurnStats t;
    {
      InterruptScope scope;
      GenerateOptions go{o.max_new_tokens, false, static_cast<int64_t>(keep), &seen, &g_interrupted};
      t.gen = runner.generate(prompt, sampler, go, on_token);
    }
    t.reused = static_cast<int64_t>(keep);
    std::string rest = stream.flush();
    std::printf("%s\n", rest.c_str());
    std::fflush(stdout);
    std::vector<int64_t> reply;
    for (int64_t id : generated)
      if (!runner.is_eos(id)) reply.push_back(id);
    next.push_back({"assistant", tokenizer.decode(reply)});
    messages = std::move(next);
    cached = ids;
    cached.insert(cached.end(), generated.begin(), generated.end() - 1);  // the last token was sampled, never fed
    if (fresh)
      std::fprintf(stderr, "[context full (%lld positions): started a fresh one from this message]\n",
                   static_cast<long long>(meta.max_context_len));
    std::fprintf(stderr, "[turn %zu] prefill %lld tok (%lld from the cache) at %.1f tok/s | decode %lld tok at %.1f tok/s%s\n",
                 turns.size() + 1, static_cast<long long>(t.gen.prompt_tokens), static_cast<long long>(keep),
                 t.gen.prefill_tps(), static_cast<long long>(t.gen.generated_tokens), t.gen.decode_tps(),
                 t.gen.interrupted ? " | interrupted" : "");
    turns.push_back(t);
  }
  finish(o, runner, turns);
  return 0;
}

std::string read_prompt_file(const std::string& path) {
  std::string text = read_file_arg(path, "--prompt-file");
  size_t bad = unicode::invalid_utf8_at(text);
  if (bad != std::string::npos)
    throw Error("--prompt-file " + path + ": not UTF-8 text (malformed byte at offset " + std::to_string(bad) + ")");
  return text;
}

std::vector<int64_t> read_prompt_ids(const std::string& path, int64_t vocab_size) {
  std::istringstream in(read_file_arg(path, "--prompt-ids"));
  std::vector<int64_t> ids;
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    errno = 0;
    long long id = std::strtoll(word.c_str(), &end, 10);
    if (errno || *end || id < 0 || (vocab_size > 0 && id >= vocab_size))
      throw Error(path + ": '" + word + "' is not a token id in [0, " + std::to_string(vocab_size) + ")");
    ids.push_back(id);
  }
  if (ids.empty()) throw Error(path + ": no token ids in the file");
  return ids;
}

// float32 rows of `dim` from a raw little-endian file (numpy's tofile).
std::vector<float> read_embeddings(const std::string& path, int64_t dim) {
  std::string bytes = read_file_arg(path, "--embeddings");
  const size_t row = sizeof(float) * static_cast<size_t>(dim);
  if (bytes.empty() || bytes.size() % row != 0)
    throw Error("--embeddings " + path + ": " + std::to_string(bytes.size()) +
                " bytes, expected float32 rows of " + std::to_string(dim) + " (the model's hidden size), " +
                std::to_string(row) + " bytes each");
  std::vector<float> x(bytes.size() / sizeof(float));
  std::memcpy(x.data(), bytes.data(), bytes.size());
  return x;
}

// `with_content`: also locate what the user wrote (only a client step reads it; a plain chat need not find it).
Prompt encode_prompt(const CliOptions& o, const std::string& prompt, const Tokenizer& tokenizer, bool with_content) {
  Prompt p;
  if (!o.prompt_ids.empty()) {
    p.ids = read_prompt_ids(o.prompt_ids, tokenizer.vocab_size());
    return p;
  }
  p.text = o.chat ? render_chat_prompt(tokenizer, prompt, ChatOptions{o.system, o.enable_thinking}) : prompt;
  p.ids = o.chat ? tokenizer.encode(p.text, false) : tokenizer.encode(p.text);
  if (!with_content) return p;
  if (!o.chat) p.content = {{0, p.text.size()}};
  else if (o.system.empty()) p.content = content_spans(p.text, {prompt});
  else p.content = content_spans(p.text, {o.system, prompt});
  return p;
}

int run(const CliOptions& o, const EmbedPrompt& embed) {
  std::string prompt = o.prompt_file.empty() ? o.prompt : read_prompt_file(o.prompt_file);
  std::unique_ptr<Runner> runner;
  if (o.cpu_threads > 0) set_cpu_threads(static_cast<uint32_t>(o.cpu_threads));
  if (!o.tokenize_only && !o.model.empty())
    runner = Runner::load(o.model, o.verbose, !o.etdump.empty());  // its errors matter most
  std::string dir = dirname(o.model);
  std::string tok_path = !o.tokenizer.empty() ? o.tokenizer : (dir == "/" ? "" : dir) + "/tokenizer.json";
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(tok_path);
  double tok_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (o.interactive) {
    if (!runner) throw UsageError("--interactive needs --model");
    return run_interactive(o, *runner, *tokenizer);
  }
  std::optional<std::vector<float>> embeddings;
  Prompt p;
  if (!o.embeddings.empty()) {
    if (runner->metadata().embeddings_dim == 0)
      throw Error(o.model + ": the program takes no input embeddings (export it with --embeddings-input)");
    embeddings = read_embeddings(o.embeddings, runner->metadata().embeddings_dim);
  } else {
    p = encode_prompt(o, prompt, *tokenizer, static_cast<bool>(embed));
  }
  const std::vector<int64_t>& ids = p.ids;
  if (o.tokenize_only) {
    std::string line;
    for (int64_t id : ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", line.c_str());
    return 0;
  }
  Sampler sampler(sampler_config(o));
  if (embed) {
    if (runner) runner->check_prompt(ids.size());  // before the client step: a prompt the model cannot take
    embeddings = embed(p, *tokenizer);
    if (!embeddings) return 0;
    if (!runner) throw UsageError("--model is required to generate from the prompt's embeddings");
    int64_t dim = runner->metadata().embeddings_dim;
    if (dim == 0) throw Error(o.model + ": the program takes no input embeddings (export it with --embeddings-input)");
    if (embeddings->size() != ids.size() * static_cast<size_t>(dim))
      throw Error("the prompt's embeddings have " + std::to_string(embeddings->size() / std::max<size_t>(ids.size(), 1)) +
                  " values per token but " + o.model + " takes a hidden size of " + std::to_string(dim));
  }
  const ModelMetadata& meta = runner->metadata();
  if (meta.vocab_size > 0 && tokenizer->vocab_size() > meta.vocab_size)
    throw Error(tok_path + ": tokenizer has " + std::to_string(tokenizer->vocab_size()) + " ids but " + o.model +
                " has a vocabulary of " + std::to_string(meta.vocab_size) + " (wrong tokenizer?)");
  if (!embeddings) runner->check_prompt(ids.size());

  TextStream stream([&](int64_t id) -> const std::string& { return tokenizer->token_bytes(id); });
  std::vector<int64_t> generated;
  if (!o.chat && !o.print_ids && o.prompt_ids.empty() && o.embeddings.empty() && !embed) {
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  auto on_token = [&](int64_t token) {
    generated.push_back(token);
    if (o.print_ids || runner->is_eos(token)) return;
    std::string text = stream.push(token);
    if (!text.empty()) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    }
  };
  GenerateOptions go{o.max_new_tokens, o.ignore_eos};
  if (o.warmup) {  // the same prompt, two tokens, untimed (the cache is overwritten by the timed run)
    Sampler greedy(SamplerConfig{});
    GenerateOptions warm{2, true};
    if (embeddings) runner->generate_from_embeddings(*embeddings, greedy, warm, nullptr);
    else runner->generate(ids, greedy, warm, nullptr);
  }
  GenerationStats stats = embeddings ? runner->generate_from_embeddings(*embeddings, sampler, go, on_token)
                                     : runner->generate(ids, sampler, go, on_token);
  if (o.print_ids) {
    std::string line;
    for (int64_t id : generated) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", line.c_str());
  } else {
    std::string rest = stream.flush();
    std::printf("%s\n", rest.c_str());
  }
  std::fflush(stdout);
  std::fprintf(stderr,
               "\n[%s] load %.0f ms (tokenizer %.0f ms) | prefill %lld tok at %.1f tok/s | decode %lld tok at %.1f "
               "tok/s | peak RSS %.1f MiB\n",
               base_name(o.model).c_str(), stats.load_ms, tok_ms, static_cast<long long>(stats.prompt_tokens),
               stats.prefill_tps(), static_cast<long long>(stats.generated_tokens), stats.decode_tps(), peak_rss_mib());
  finish(o, *runner, {TurnStats{stats, 0}});
  return 0;
}

}  // namespace

int run_cli(const CliOptions& options, const ArgParser& parser, const EmbedPrompt& embed) {
  try {
    CliOptions o = options;
    if (o.max_new_tokens == -1) o.max_new_tokens = o.interactive ? 256 : 64;
    validate(o, static_cast<bool>(embed));
    return run(o, embed);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s\n", parser.usage_line().c_str());
    print_error(e.what());
    return 2;
  } catch (const std::exception& e) {  // zoo::Error and anything else: one line, exit 1
    print_error(e.what());
    return 1;
  }
}

}  // namespace zoo
