// Chat formats as a small registry: each renders a conversation exactly as its jinja template does (the C++
// runner has no jinja engine), and is picked by a marker its template contains.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "zoo/tokenizer.h"

namespace zoo {

struct ChatOptions {
  std::string system;                   // system message; empty = the template's default, if any
  std::optional<bool> enable_thinking;  // Qwen3: false appends an empty <think></think> block
};

struct ChatMessage {
  std::string role;  // "user" or "assistant"
  std::string content;
};

// The conversation's prompt text (the system message from `options`), ending in the generation prompt, exactly as
// the tokenizer's jinja template renders it (ChatML, Llama 3 or Gemma); encode it without adding BOS.
std::string render_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, const ChatOptions& options);

// The one-turn chat prompt text for the tokenizer's template (ChatML, Llama 3 or Gemma); encode it without
// adding BOS (the formats that want one write it). Other templates are refused with a zoo::Error.
std::string render_chat_prompt(const Tokenizer& tokenizer, const std::string& user, const ChatOptions& options);

// [begin, end) byte spans of each non-empty `contents` entry in the rendered `text`, found in order (a template
// that trims content is matched by the trimmed text). A zoo::Error when one is not there.
std::vector<std::pair<size_t, size_t>> content_spans(const std::string& text, const std::vector<std::string>& contents);

// The registered format names, for messages: "ChatML, Llama 3, Gemma".
std::string chat_format_names();

}  // namespace zoo
