// sgt4t_runner: the private chat on the client. The chat prompt's message content goes through a Stained Glass
// Transform .pte (python -m models.sgt4t.export); the transformed embeddings are prefilled into the base model's
// .pte (exported with --embeddings-input) and the reply is streamed. Build: make sgt4t-xnnpack.
//
//   sgt4t_runner --sgt sgt.pte --model base.pte --prompt "..."            # client transform + base model
//   sgt4t_runner --sgt sgt.pte --prompt "..." --embeddings-out x.f32      # the client alone: what it sends
//   llama3_runner --model base.pte --embeddings x.f32                      # the server side, from that file
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "zoo/cli.h"
#include "zoo/errors.h"
#include "zoo/runner.h"
#include "zoo/tokenizer.h"

namespace {

using executorch::runtime::EValue;
using ScalarType = executorch::aten::ScalarType;

// An SGT program (contract sgt4t, common/contract.py): forward(input_ids [1,S] long, noise_mask [1,S] bool,
// attention_mask [1,S] long) -> x~ [1,S,hidden], fresh noise on every call.
class Sgt {
 public:
  Sgt(const std::string& path, bool verbose)
      : path_(path), module_(zoo::open_program(path, "sgt4t", 1, {"forward", "get_max_seq_len", "get_hidden_size"},
                                               verbose)) {
    zoo::load_method(*module_, path, "forward");
    max_seq_len_ = zoo::constant_int(*module_, path, "get_max_seq_len", 0);
    hidden_ = zoo::constant_int(*module_, path, "get_hidden_size", 0);
    vocab_ = zoo::constant_int(*module_, path, "get_vocab_size", 0);
  }

  int64_t hidden() const { return hidden_; }

  std::vector<float> operator()(const std::vector<int64_t>& ids, const std::vector<bool>& noise) {
    const int64_t n = static_cast<int64_t>(ids.size());
    if (n == 0) throw zoo::Error("the prompt is empty");
    if (n > max_seq_len_)
      throw zoo::Error("the prompt is " + std::to_string(n) + " tokens but " + path_ + " takes at most " +
                       std::to_string(max_seq_len_) + " (export it with a larger --max-seq-len)");
    for (int64_t id : ids)
      if (vocab_ > 0 && (id < 0 || id >= vocab_))
        throw zoo::Error("token id " + std::to_string(id) + " is outside " + path_ + "'s vocabulary of " +
                         std::to_string(vocab_) + " (wrong tokenizer?)");
    std::vector<int64_t> tokens(ids), attention(n, 1);
    std::unique_ptr<bool[]> mask(new bool[n]);
    for (int64_t i = 0; i < n; ++i) mask[i] = noise[i];
    const int s = static_cast<int>(n);
    auto t = executorch::extension::from_blob(tokens.data(), {1, s}, ScalarType::Long);
    auto m = executorch::extension::from_blob(mask.get(), {1, s}, ScalarType::Bool);
    auto a = executorch::extension::from_blob(attention.data(), {1, s}, ScalarType::Long);
    auto out = zoo::execute(*module_, path_, "forward", {EValue(*t), EValue(*m), EValue(*a)});
    if (out.empty() || !out[0].isTensor()) throw zoo::Error(path_ + ": forward returned no embeddings tensor");
    const auto& x = out[0].toTensor();
    if (x.scalar_type() != ScalarType::Float || x.numel() != n * hidden_)
      throw zoo::Error(path_ + ": forward returned no float32 embeddings [1, S, " + std::to_string(hidden_) + "]");
    return std::vector<float>(x.const_data_ptr<float>(), x.const_data_ptr<float>() + x.numel());
  }

 private:
  std::string path_;
  std::unique_ptr<zoo::Module> module_;
  int64_t max_seq_len_ = 0, hidden_ = 0, vocab_ = 0;
};

// The noise mask of models/sgt4t/chat.py: a token is noised when its bytes overlap message content. Token byte
// offsets come from the tokens' own bytes, which concatenate to the text for the byte-level BPE of llama-family
// bases.
std::vector<bool> noise_mask(const zoo::Prompt& p, const zoo::Tokenizer& tok, bool all_tokens) {
  std::vector<bool> mask(p.ids.size(), all_tokens);
  if (all_tokens) return mask;
  size_t at = 0;
  for (size_t i = 0; i < p.ids.size(); ++i) {
    size_t s = at, e = at + tok.token_bytes(p.ids[i]).size();
    for (const auto& [a, b] : p.content) mask[i] = mask[i] || (s < e && s < b && e > a);
    at = e;
  }
  if (at != p.text.size())
    throw zoo::Error(tok.path() + ": the tokens do not spell the prompt byte for byte (a normalizing tokenizer), so "
                                  "message content cannot be located; use --transform-all-tokens");
  return mask;
}

}  // namespace

int main(int argc, char** argv) {
  zoo::CliOptions o;
  std::string sgt_path, embeddings_out;
  bool all_tokens = false, print_mask = false;
  zoo::ArgParser args("sgt4t_runner",
                      "Private chat: the prompt through a Stained Glass Transform .pte, then a base model .pte fed its "
                      "embeddings.");
  zoo::add_standard_options(args, o, "llama3");
  args.option("--sgt", &sgt_path, "FILE.pte", "the SGT program (python -m models.sgt4t.export); required");
  args.flag("--transform-all-tokens", &all_tokens, "noise the chat template's tokens too");
  args.option("--embeddings-out", &embeddings_out, "FILE",
              "write the transformed embeddings (float32 [S, hidden], raw) for <base>_runner --embeddings; "
              "without --model, stop there");
  args.flag("--print-mask", &print_mask, "print the prompt's token ids and noise mask (0/1), and exit");
  if (int status = args.parse(argc, argv); status >= 0) return status;
  o.chat = true;  // the SGT masks message content, which the chat template delimits
  if (sgt_path.empty() && !print_mask) {
    std::fprintf(stderr, "%s\n", args.usage_line().c_str());
    zoo::print_error("--sgt is required");
    return 2;
  }
  if (!print_mask && o.model.empty() && embeddings_out.empty()) {
    std::fprintf(stderr, "%s\n", args.usage_line().c_str());
    zoo::print_error("--model (the base model's .pte, exported with --embeddings-input) or --embeddings-out is required");
    return 2;
  }
  if (!o.prompt_ids.empty() || !o.embeddings.empty() || o.tokenize_only) {
    std::fprintf(stderr, "%s\n", args.usage_line().c_str());
    zoo::print_error("sgt4t_runner takes a text prompt: --prompt-ids, --embeddings and --tokenize-only do not apply");
    return 2;
  }
  if (o.tokenizer.empty() && !sgt_path.empty()) o.tokenizer = zoo::dirname(sgt_path) + "/tokenizer.json";
  std::unique_ptr<Sgt> sgt;
  double load_ms = 0;
  try {  // the SGT first, as run_cli loads the model first: a wrong program matters more than a prompt problem
    auto t0 = std::chrono::steady_clock::now();
    if (!print_mask) sgt = std::make_unique<Sgt>(sgt_path, o.verbose);
    load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  } catch (const std::exception& e) {
    zoo::print_error(e.what());
    return 1;
  }
  auto embed = [&](const zoo::Prompt& p, const zoo::Tokenizer& tok) -> std::optional<std::vector<float>> {
    std::vector<bool> mask = noise_mask(p, tok, all_tokens);
    if (print_mask) {
      std::string ids, bits;
      for (size_t i = 0; i < p.ids.size(); ++i)
        ids += (i ? " " : "") + std::to_string(p.ids[i]), bits += (i ? " " : "") + std::string(mask[i] ? "1" : "0");
      std::printf("%s\n%s\n", ids.c_str(), bits.c_str());
      return std::nullopt;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::vector<float> x = (*sgt)(p.ids, mask);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    size_t noised = 0;
    for (bool b : mask) noised += b;
    std::fprintf(stderr, "[client] %zu prompt tokens, %zu transformed (SGT load %.0f ms, transform %.1f ms)\n",
                 p.ids.size(), noised, load_ms, ms);
    if (!embeddings_out.empty()) {
      zoo::write_file_arg(embeddings_out,
                          std::string(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float)),
                          "--embeddings-out");
      std::fprintf(stderr, "wrote %s (%zu x %lld float32, %zu bytes)\n", embeddings_out.c_str(), p.ids.size(),
                   static_cast<long long>(sgt->hidden()), x.size() * sizeof(float));
      if (o.model.empty()) return std::nullopt;
    }
    return x;
  };
  return zoo::run_cli(o, args, embed);
}
