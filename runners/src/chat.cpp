#include "zoo/chat.h"

#include <string_view>

#include "zoo/errors.h"

namespace zoo {
namespace {

// jinja's `trim`: Python's str.strip() (ASCII whitespace is what these prompts carry).
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// A system prompt the template writes when the conversation has none, e.g. SmolLM2's
// '<|im_start|>system\nYou are a helpful AI assistant named SmolLM...<|im_end|>\n': the first literal
// "<|im_start|>system" + newline + plain text + "<|im_end|>" inside one jinja string.
std::string default_chatml_system(const std::string& tmpl) {
  const std::string head = "<|im_start|>system";
  for (size_t at = tmpl.find(head); at != std::string::npos; at = tmpl.find(head, at + 1)) {
    size_t i = at + head.size();
    if (tmpl.compare(i, 1, "\n") == 0) i += 1;
    else if (tmpl.compare(i, 2, "\\n") == 0) i += 2;
    else continue;
    size_t end = tmpl.find("<|im_end|>", i);
    if (end == std::string::npos) continue;
    std::string raw = tmpl.substr(i, end - i);
    if (raw.empty() || raw.find_first_of("'\"{}+") != std::string::npos) continue;  // not a plain literal
    std::string text;
    for (size_t k = 0; k < raw.size(); ++k) {  // jinja string escapes
      if (raw[k] == '\\' && k + 1 < raw.size()) {
        char e = raw[++k];
        text += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        text += raw[k];
      }
    }
    return text;
  }
  return "";
}

// ChatML (SmolLM2, Qwen): content as it is; Qwen3's enable_thinking=false adds an empty think block. A template
// that splits reasoning off (Qwen3) renders an earlier reply as what follows its last </think>.
std::string chatml(const Tokenizer& tok, const std::vector<ChatMessage>& messages, const ChatOptions& o) {
  const std::string& tmpl = tok.chat_template();
  std::string system = o.system.empty() ? default_chatml_system(tmpl) : o.system;
  bool strips_reasoning = tmpl.find("</think>") != std::string::npos;
  std::string text;
  if (!system.empty()) text += "<|im_start|>system\n" + system + "<|im_end|>\n";
  for (const ChatMessage& m : messages) {
    std::string content = m.content;
    if (m.role == "assistant" && strips_reasoning) {
      size_t at = content.rfind("</think>");
      if (at != std::string::npos) {
        size_t first = content.find_first_not_of('\n', at + 8);  // jinja's lstrip('\n')
        content = first == std::string::npos ? "" : content.substr(first);
      }
    }
    text += "<|im_start|>" + m.role + "\n" + content + "<|im_end|>\n";
  }
  text += "<|im_start|>assistant\n";
  if (o.enable_thinking.has_value() && !*o.enable_thinking) {
    if (tmpl.find("enable_thinking") == std::string::npos)
      throw Error(tok.path() + ": this chat template has no thinking switch (enable_thinking)");
    text += "<think>\n\n</think>\n\n";
  }
  return text;
}

// Llama 3 / 3.2 Instruct without the date header: BOS, then each turn's header and its trimmed content.
std::string llama3(const Tokenizer& tok, const std::vector<ChatMessage>& messages, const ChatOptions& o) {
  if (tok.chat_template().find("Cutting Knowledge Date") != std::string::npos)
    throw Error(tok.path() + ": Llama 3.1+ templates write a dated system header the C++ runner does not render; "
                             "format the prompt yourself and drop --chat");
  auto turn = [](const std::string& role, const std::string& content) {
    return "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + trim(content) + "<|eot_id|>";
  };
  std::string text = tok.bos_token();
  if (!o.system.empty()) text += turn("system", o.system);
  for (const ChatMessage& m : messages) text += turn(m.role, m.content);
  return text + "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

// Gemma 3: BOS; the system message (as it is) prefixes the first user turn; content trimmed; "model" answers.
std::string gemma(const Tokenizer& tok, const std::vector<ChatMessage>& messages, const ChatOptions& o) {
  std::string text = tok.bos_token();
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    std::string prefix = i == 0 && !o.system.empty() ? o.system + "\n\n" : "";
    text += "<start_of_turn>" + std::string(m.role == "assistant" ? "model" : m.role) + "\n" + prefix +
            trim(m.content) + "<end_of_turn>\n";
  }
  return text + "<start_of_turn>model\n";
}

struct ChatFormat {
  const char* name;
  const char* marker;  // a string its templates contain
  std::string (*render)(const Tokenizer&, const std::vector<ChatMessage>&, const ChatOptions&);
  bool thinking;  // supports --enable-thinking
};

const ChatFormat kFormats[] = {
    {"ChatML", "<|im_start|>", chatml, true},
    {"Llama 3", "<|start_header_id|>", llama3, false},
    {"Gemma", "<start_of_turn>", gemma, false},
};

}  // namespace

std::string chat_format_names() {
  std::string names;
  for (const ChatFormat& f : kFormats) names += (names.empty() ? "" : ", ") + std::string(f.name);
  return names;
}

std::vector<std::pair<size_t, size_t>> content_spans(const std::string& text, const std::vector<std::string>& contents) {
  std::vector<std::pair<size_t, size_t>> spans;
  size_t cursor = 0;
  for (std::string content : contents) {
    if (content.empty()) continue;
    size_t at = text.find(content, cursor);
    if (at == std::string::npos) at = text.find(content = trim(content), cursor);
    if (at == std::string::npos)
      throw Error("chat template: message content '" + one_line(content.substr(0, 40)) +
                  "' does not appear in the rendered prompt");
    spans.emplace_back(at, at + content.size());
    cursor = at + content.size();
  }
  return spans;
}

std::string render_chat_prompt(const Tokenizer& tokenizer, const std::string& user, const ChatOptions& options) {
  return render_chat(tokenizer, {{"user", user}}, options);
}

std::string render_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages, const ChatOptions& options) {
  const std::string& tmpl = tokenizer.chat_template();
  if (tmpl.empty()) throw Error(tokenizer.path() + ": tokenizer has no chat template; drop --chat and pass raw text");
  for (const ChatFormat& f : kFormats) {
    if (tmpl.find(f.marker) == std::string::npos) continue;
    if (options.enable_thinking.has_value() && !f.thinking)
      throw Error(tokenizer.path() + ": the " + f.name + " chat format has no thinking switch (enable_thinking)");
    return f.render(tokenizer, messages, options);
  }
  throw Error(tokenizer.path() + ": --chat knows the " + chat_format_names() +
              " chat formats; this template is none of them, so format the prompt yourself and drop --chat");
}

}  // namespace zoo
