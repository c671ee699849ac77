// BPE over an HF tokenizer.json, encoding exactly as the `tokenizers` library does: added/special tokens split
// first, the normalizers (NFC, Replace, Prepend), the pre-tokenizer, then ranked merges. Two kinds:
// - byte-level (GPT-2 / SmolLM2 / Llama 3 / Qwen): hand-written matchers for their regexes, bytes as symbols;
// - SentencePiece-style with byte fallback (Gemma): characters as symbols, unknown ones as <0xXX> byte tokens,
//   "▁" for spaces.
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

}  // namespace zoo
