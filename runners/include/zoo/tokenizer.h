// Byte-level BPE over an HF tokenizer.json (GPT-2 / SmolLM2 / Llama 3 / Qwen style), encoding exactly as
// the `tokenizers` library does: added/special tokens split first, optional NFC, the regex pre-tokenizer
// (hand-written matchers for the GPT-2, Llama 3 and Qwen 2 patterns), byte mapping, then ranked merges.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zoo {

class Tokenizer {
 public:
  // `path`: a tokenizer.json file or a directory holding one; tokenizer_config.json and chat_template.jinja
  // are read from the same directory when present. Throws zoo::Error with a one-line reason.
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  ~Tokenizer();

  // Token ids of `text`; BOS is prepended when `add_bos` (default: tokenizer_config's add_bos_token).
  std::vector<int64_t> encode(std::string_view text, std::optional<bool> add_bos = std::nullopt) const;
  // The bytes token `id` stands for (may be part of a UTF-8 character); empty for an unknown id.
  const std::string& token_bytes(int64_t id) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  std::optional<int64_t> token_id(std::string_view token) const;

  int64_t vocab_size() const;  // ids incl. added tokens (transformers' len(tokenizer))
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  bool add_bos_token() const;
  const std::string& chat_template() const;  // empty when the tokenizer has none
  const std::string& path() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ChatOptions {
  std::string system;                   // system message; empty = the template's default, if any
  std::optional<bool> enable_thinking;  // Qwen3: false appends an empty <think></think> block
};

// The one-turn chat prompt text, rendered as the model's ChatML template does (SmolLM2, Qwen). Templates
// that are not ChatML are refused with a zoo::Error (the C++ runner has no jinja engine).
std::string render_chat_prompt(const Tokenizer& tokenizer, const std::string& user, const ChatOptions& options);

}  // namespace zoo
