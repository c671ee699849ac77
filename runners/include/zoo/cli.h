// The command line every model's main.cpp shares: a small flag parser and the generate-and-print driver.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zoo {

class Tokenizer;

struct CliOptions {
  std::string model;      // --model FILE.pte
  std::string tokenizer;  // --tokenizer FILE|DIR (default: tokenizer.json beside the .pte)
  std::string prompt;     // --prompt TEXT
  std::string prompt_file;
  std::string prompt_ids;  // --prompt-ids FILE: token ids (whitespace-separated, as --tokenize-only prints)
  std::string embeddings;  // --embeddings FILE: float32 prompt embeddings [S, hidden] (forward_embeddings)
  bool ignore_eos = false;  // generate max_new_tokens whatever the model emits (benchmarks)
  bool chat = false;  // wrap the prompt in the model's (ChatML) chat template
  std::string system;
  std::optional<bool> enable_thinking;
  int64_t max_new_tokens = -1;  // -1: 64, or 256 per reply with --interactive
  double temperature = 0.0, top_p = 1.0, min_p = 0.0, repetition_penalty = 1.0;
  int64_t top_k = 0;
  int64_t seed = 0;
  bool interactive = false;  // a chat REPL on stdin, the KV cache kept between turns
  int64_t cpu_threads = 0;   // 0: ExecuTorch's default thread pool
  bool warmup = false;       // run the prompt once, untimed, first
  std::string stats_json;    // --stats-json FILE
  std::string etdump;        // --etdump FILE
  bool tokenize_only = false;  // print the prompt's token ids and exit (no --model needed)
  bool print_ids = false;      // print generated token ids instead of text
  bool verbose = false;        // show ExecuTorch's own log lines
};

class ArgParser {
 public:
  ArgParser(std::string program, std::string description);
  void flag(const std::string& name, bool* out, const std::string& help);
  // --name / --no-name setting an optional bool
  void toggle(const std::string& name, std::optional<bool>* out, const std::string& help);
  void option(const std::string& name, std::string* out, const std::string& metavar, const std::string& help);
  void option(const std::string& name, int64_t* out, const std::string& metavar, const std::string& help);
  void option(const std::string& name, double* out, const std::string& metavar, const std::string& help);

  // -1: parsed, go on; otherwise the exit status (0 after --help, 2 after a usage error, printed with usage).
  int parse(int argc, char** argv);
  std::string usage() const;       // the full help (--help)
  std::string usage_line() const;  // the one line printed above a usage error
  const std::string& program() const { return program_; }

 private:
  struct Spec {
    std::string name, metavar, help;
    enum Kind { Flag, Toggle, String, Int, Float } kind;
    void* out;
  };
  std::string program_, description_;
  std::vector<Spec> specs_;
};

// The flags every model's runner takes (--model, --tokenizer, --prompt, --chat, sampling, ...); `model` is the
// package name (e.g. "llama3"), used in the help text. A main.cpp adds its model's own flags after these.
void add_standard_options(ArgParser& args, CliOptions& o, const std::string& model);

// The prompt as the runner encodes it: the text (chat-rendered with --chat), its ids, and the byte spans in the text
// of what the user wrote (with --chat: the system message when given, then the user's; else the whole text).
struct Prompt {
  std::string text;
  std::vector<int64_t> ids;
  std::vector<std::pair<size_t, size_t>> content;
};

// A client-side step between the encoded prompt and the model, e.g. models/sgt4t's Stained Glass Transform: returns
// the embeddings to prefill ([S, hidden] row-major), or nothing when it has done all there is to do (exit 0).
using EmbedPrompt = std::function<std::optional<std::vector<float>>(const Prompt&, const Tokenizer&)>;

// Load the model and tokenizer, encode (or chat-render) the prompt, generate with streaming output and print
// stats on stderr. With `embed`, the prompt is prefilled as the embeddings it returns (and --model may be left out
// when it returns none). Returns the exit status: 0, 1 (one "error: ..." line), or 2 (usage error, with usage).
int run_cli(const CliOptions& options, const ArgParser& parser, const EmbedPrompt& embed = {});

// `path`'s bytes; a zoo::Error naming `flag` when it is missing or unreadable.
std::string read_file_arg(const std::string& path, const char* flag);
// Write `bytes` to `path` atomically (a temporary beside it, renamed over it); a zoo::Error naming `flag` on failure.
void write_file_arg(const std::string& path, const std::string& bytes, const char* flag);
// The directory of `path` ("." for a bare file name).
std::string dirname(const std::string& path);

}  // namespace zoo
