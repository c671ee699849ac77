#include "zoo/tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <fstream>
#include <map>
#include <queue>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include "zoo/errors.h"
#include "zoo/json.h"
#include "zoo/unicode.h"

namespace zoo {
namespace {

namespace uc = unicode;

// The pre-tokenizer regexes HF byte-level tokenizers use, matched by hand (no regex engine needed).
enum class Pattern { Gpt2, Llama3, Qwen2 };

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_other(uint32_t c) { return !uc::is_whitespace(c) && !uc::is_letter(c) && !uc::is_number(c); }
bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

uint32_t fold(uint32_t c, bool ignore_case) {
  if (!ignore_case) return c;
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S case-folds to 's'
  return c;
}

// 's 't 're 've 'm 'll 'd at i: the end of the match, or i.
size_t match_contraction(const std::vector<uint32_t>& c, size_t i, bool ignore_case) {
  static const char* const kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
  if (c[i] != '\'') return i;
  for (const char* suffix : kSuffixes) {
    size_t k = 0;
    while (suffix[k] && i + 1 + k < c.size() && fold(c[i + 1 + k], ignore_case) == static_cast<uint32_t>(suffix[k])) ++k;
    if (!suffix[k]) return i + 1 + k;
  }
  return i;
}

// `\s+(?!\S)|\s+` at a whitespace character i.
size_t match_spaces(const std::vector<uint32_t>& c, size_t i) {
  size_t k = i;
  while (k < c.size() && uc::is_whitespace(c[k])) ++k;
  if (k == c.size() || k - i < 2) return k;
  return k - 1;  // leave the last space to prefix the next word
}

template <typename Pred>
size_t run(const std::vector<uint32_t>& c, size_t j, Pred pred) {
  while (j < c.size() && pred(c[j])) ++j;
  return j;
}

// End of the regex match starting at i (every position matches one of the alternatives).
size_t match_at(Pattern p, const std::vector<uint32_t>& c, size_t i) {
  const size_t n = c.size();
  const uint32_t c0 = c[i];
  if (p == Pattern::Gpt2) {
    if (size_t e = match_contraction(c, i, false); e > i) return e;
    size_t j = i + (c0 == ' ' && i + 1 < n ? 1 : 0);
    if (uc::is_letter(c[j])) return run(c, j, uc::is_letter);
    if (uc::is_number(c[j])) return run(c, j, uc::is_number);
    if (is_other(c[j])) return run(c, j, is_other);
    return match_spaces(c, i);
  }
  if (size_t e = match_contraction(c, i, true); e > i) return e;
  if (uc::is_letter(c0)) return run(c, i, uc::is_letter);
  if (!is_crlf(c0) && !uc::is_number(c0) && i + 1 < n && uc::is_letter(c[i + 1])) return run(c, i + 1, uc::is_letter);
  if (uc::is_number(c0)) {
    size_t max_digits = p == Pattern::Llama3 ? 3 : 1;
    size_t j = i;
    while (j < n && j - i < max_digits && uc::is_number(c[j])) ++j;
    return j;
  }
  size_t j = i + (c0 == ' ' && i + 1 < n ? 1 : 0);
  if (is_other(c[j])) return run(c, run(c, j, is_other), is_crlf);
  // \s*[\r\n]+ : through the last CR/LF of the whitespace run
  size_t k = run(c, i, uc::is_whitespace);
  for (size_t m = k; m > i; --m)
    if (is_crlf(c[m - 1])) return m;
  return match_spaces(c, i);
}

void split_pattern(Pattern p, const std::string& text, std::vector<std::string>& out) {
  std::vector<uint32_t> cps = uc::decode_utf8(text);
  for (size_t i = 0; i < cps.size();) {
    size_t e = std::max(match_at(p, cps, i), i + 1);
    out.push_back(uc::encode_utf8(cps.data() + i, e - i));
    i = e;
  }
}

// GPT-2's reversible byte -> printable code point mapping.
std::array<uint32_t, 256> byte_to_unicode() {
  std::array<uint32_t, 256> map{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) map[b] = direct[b] ? b : next++;
  return map;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read " + what);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json::Value parse_json(const std::string& path, const char* what) {
  std::string text = read_file(path, what);
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    throw Error(path + ": not a valid " + what + " (JSON " + e.what() + ")");
  }
}

std::string token_content(const json::Value* v) {
  if (!v) return "";
  if (v->is_string()) return v->as_string();
  if (v->is_object()) return v->get_string("content");
  return "";
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

struct AddedToken {
  std::string content;
  int64_t id;
  bool single_word, lstrip, rstrip, normalized, special;
};

struct Tokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int64_t> vocab;  // byte-level string -> id
  std::unordered_map<uint64_t, std::pair<uint32_t, int64_t>> merges;  // (left id, right id) -> (rank, merged id)
  std::array<int64_t, 256> byte_ids{};  // byte-level: id of each single byte's symbol (-1 if absent)
  // SentencePiece-style BPE (Gemma, Llama 2): symbols start as UTF-8 characters; a character missing from the
  // vocab becomes its bytes' <0xXX> tokens (byte_fallback), else unk (consecutive unks fused with fuse_unk).
  bool byte_level = false;
  bool byte_fallback = false, fuse_unk = false;
  std::array<int64_t, 256> fallback_ids{};  // id of "<0xXX>" for each byte (-1 if absent)
  std::vector<std::string> id_bytes;    // id -> the bytes it decodes to
  std::vector<AddedToken> added;
  std::array<bool, 256> added_first_byte{};  // quick filter: can an added token start with this byte?
  bool ignore_merges = false;
  int64_t unk_id = -1;
  struct Normalize {  // one normalizer step: NFC, Replace(String from -> to) or Prepend(to)
    enum Kind { Nfc, Replace, Prepend } kind;
    std::string from, to;
  };
  std::vector<Normalize> normalizers;
  struct Step {
    bool byte_level_regex;  // ByteLevel with use_regex: the GPT-2 split
    bool add_prefix_space;
    bool split;  // Split with a known pattern
    Pattern pattern;
    std::string literal;  // Split on a literal string (MergedWithPrevious: each piece ends with it) when non-empty
  };
  std::vector<Step> steps;
  std::string bos_token, eos_token, chat_template;
  bool add_bos = false;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache;

  void bpe(const std::string& word, std::vector<int64_t>& out) const;
  void initial_symbols(const std::string& word, std::vector<int64_t>& ids) const;
  std::string normalize(const std::string& text) const;
  void encode_piece(const std::string& piece, std::vector<int64_t>& out) const;
  void encode_text(const std::string& text, std::vector<int64_t>& out) const;
  // Splits `text` on added tokens of one kind (normalized or not): (text, -1) gaps and (content, id) matches.
  std::vector<std::pair<std::string, int64_t>> split_added(const std::string& text, bool normalized) const;
};

void Tokenizer::Impl::bpe(const std::string& word, std::vector<int64_t>& out) const {
  static const std::array<uint32_t, 256> kByteChars = byte_to_unicode();
  if (auto it = cache.find(word); it != cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<int64_t> result;
  std::string mapped;
  if (byte_level) {
    for (unsigned char b : word) uc::append_utf8(mapped, kByteChars[b]);
  } else {
    mapped = word;
  }
  auto whole = vocab.find(mapped);
  if (ignore_merges && whole != vocab.end()) {
    result.push_back(whole->second);
  } else {
    // Symbols as a linked list; merge the lowest-ranked adjacent pair first (leftmost on ties).
    struct Sym {
      int64_t id;
      int prev, next;
      bool alive;
    };
    std::vector<int64_t> ids;
    initial_symbols(word, ids);
    std::vector<Sym> syms;
    for (size_t k = 0; k < ids.size(); ++k)
      syms.push_back({ids[k], static_cast<int>(k) - 1, k + 1 < ids.size() ? static_cast<int>(k) + 1 : -1, true});
    using Entry = std::tuple<uint32_t, int, int64_t>;  // rank, position, merged id
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
    auto push = [&](int pos) {
      if (pos < 0 || syms[pos].next < 0) return;
      int64_t a = syms[pos].id, b = syms[syms[pos].next].id;
      if (a < 0 || b < 0) return;
      auto it = merges.find((static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b));
      if (it != merges.end()) queue.emplace(it->second.first, pos, it->second.second);
    };
    for (size_t k = 0; k + 1 < syms.size(); ++k) push(static_cast<int>(k));
    while (!queue.empty()) {
      auto [rank, pos, merged] = queue.top();
      queue.pop();
      Sym& s = syms[pos];
      if (!s.alive || s.next < 0) continue;
      auto it = merges.find((static_cast<uint64_t>(s.id) << 32) | static_cast<uint64_t>(syms[s.next].id));
      if (it == merges.end() || it->second.first != rank) continue;  // stale entry
      Sym& right = syms[s.next];
      right.alive = false;
      s.id = merged;
      s.next = right.next;
      if (s.next >= 0) syms[s.next].prev = pos;
      push(s.prev);
      push(pos);
    }
    for (const Sym& s : syms) {
      if (!s.alive) continue;
      if (s.id >= 0) result.push_back(s.id);
      else if (unk_id >= 0) result.push_back(unk_id);
    }
  }
  out.insert(out.end(), result.begin(), result.end());
  if (cache.size() < 100000) cache.emplace(word, std::move(result));
}

void Tokenizer::Impl::initial_symbols(const std::string& word, std::vector<int64_t>& ids) const {
  if (byte_level) {
    for (unsigned char b : word) ids.push_back(byte_ids[b]);
    return;
  }
  bool last_unk = false;
  for (uint32_t cp : uc::decode_utf8(word)) {
    std::string ch;
    uc::append_utf8(ch, cp);
    if (auto it = vocab.find(ch); it != vocab.end()) {
      ids.push_back(it->second);
      last_unk = false;
      continue;
    }
    bool all = byte_fallback;
    for (unsigned char b : ch) all = all && fallback_ids[b] >= 0;
    if (all) {
      for (unsigned char b : ch) ids.push_back(fallback_ids[b]);
      last_unk = false;
    } else if (!(fuse_unk && last_unk)) {
      ids.push_back(-1);  // unk (or dropped without one), as tokenizers does
      last_unk = true;
    }
  }
}

std::string Tokenizer::Impl::normalize(const std::string& text) const {
  std::string s = text;
  for (const Normalize& n : normalizers) {
    if (n.kind == Normalize::Nfc) {
      s = uc::nfc(s);
    } else if (n.kind == Normalize::Prepend) {
      if (!s.empty()) s = n.to + s;
    } else {
      std::string out;
      for (size_t i = 0; i < s.size();) {
        if (!n.from.empty() && s.compare(i, n.from.size(), n.from) == 0) {
          out += n.to;
          i += n.from.size();
        } else {
          out += s[i++];
        }
      }
      s.swap(out);
    }
  }
  return s;
}

void Tokenizer::Impl::encode_piece(const std::string& piece, std::vector<int64_t>& out) const {
  std::vector<std::string> pieces{piece}, next;
  for (const Step& step : steps) {
    next.clear();
    for (std::string& p : pieces) {
      if (step.add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(p.begin(), ' ');
      if (step.byte_level_regex) {
        split_pattern(Pattern::Gpt2, p, next);
      } else if (!step.literal.empty()) {  // MergedWithPrevious: "a b" on " " -> "a ", "b"
        size_t from = 0;
        for (size_t at = p.find(step.literal); at != std::string::npos; at = p.find(step.literal, from)) {
          next.push_back(p.substr(from, at + step.literal.size() - from));
          from = at + step.literal.size();
        }
        if (from < p.size()) next.push_back(p.substr(from));
      } else if (step.split) {
        split_pattern(step.pattern, p, next);
      } else {
        next.push_back(std::move(p));
      }
    }
    pieces.swap(next);
  }
  for (const std::string& p : pieces)
    if (!p.empty()) bpe(p, out);
}

std::vector<std::pair<std::string, int64_t>> Tokenizer::Impl::split_added(const std::string& text,
                                                                          bool normalized) const {
  std::vector<std::pair<std::string, int64_t>> out;
  size_t gap = 0, i = 0;
  auto is_word = [](unsigned char ch) { return std::isalnum(ch) || ch == '_' || ch >= 0x80; };
  while (i < text.size()) {
    if (!added_first_byte[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const AddedToken* best = nullptr;
    for (const AddedToken& t : added) {  // leftmost-longest, as tokenizers' aho-corasick matcher
      if (t.normalized != normalized || t.content.empty()) continue;
      if (text.compare(i, t.content.size(), t.content) != 0) continue;
      if (best && best->content.size() >= t.content.size()) continue;
      if (t.single_word) {
        size_t end = i + t.content.size();
        if ((i > 0 && is_word(text[i - 1])) || (end < text.size() && is_word(text[end]))) continue;
      }
      best = &t;
    }
    if (!best) {
      ++i;
      continue;
    }
    size_t start = i, end = i + best->content.size();
    if (best->lstrip)
      while (start > gap && std::isspace(static_cast<unsigned char>(text[start - 1]))) --start;
    if (best->rstrip)
      while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
    if (start > gap) out.emplace_back(text.substr(gap, start - gap), -1);
    out.emplace_back(best->content, best->id);
    gap = i = end;
  }
  if (gap < text.size()) out.emplace_back(text.substr(gap), -1);
  return out;
}

void Tokenizer::Impl::encode_text(const std::string& text, std::vector<int64_t>& out) const {
  for (auto& [raw, id] : split_added(text, false)) {
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    std::string norm = normalize(raw);
    for (auto& [piece, id2] : split_added(norm, true)) {
      if (id2 >= 0) out.push_back(id2);
      else encode_piece(piece, out);
    }
  }
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& arg) {
  std::string path = arg;
  if (is_dir(arg)) path = arg + "/tokenizer.json";
  if (!file_exists(path))
    throw Error(arg + ": no such tokenizer (expected a tokenizer.json file or a directory holding one)");
  json::Value root = parse_json(path, "tokenizer.json");
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  auto unsupported = [&](const std::string& what) {
    return Error(path + ": " + what +
                 " is not supported by the C++ tokenizer (byte-level BPE, or SentencePiece-style BPE with byte fallback)");
  };

  const json::Value* model = root.find("model");
  if (!model || !model->is_object()) throw Error(path + ": not a tokenizer.json (no \"model\" object)");
  std::string type = model->get_string("type", "BPE");
  if (type != "BPE") throw unsupported("model type " + type);
  impl->byte_fallback = model->get_bool("byte_fallback", false);
  impl->fuse_unk = model->get_bool("fuse_unk", false);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!model->get_string(key).empty()) throw unsupported(std::string("BPE ") + key);
  impl->ignore_merges = model->get_bool("ignore_merges", false);

  const json::Value* vocab = model->find("vocab");
  const json::Value* merges = model->find("merges");
  if (!vocab || !vocab->is_object() || !merges || !merges->is_array())
    throw Error(path + ": BPE model without vocab/merges");
  // Every id read from the file is checked before it indexes anything (a negative or huge id used to write out of
  // bounds or end in std::bad_alloc).
  constexpr int64_t kMaxId = int64_t{1} << 24;
  auto checked_id = [&](const json::Value& v, const std::string& token) {
    double x = v.is_number() ? v.as_number() : -1.0;
    if (!(x >= 0 && x < static_cast<double>(kMaxId)) || x != std::floor(x)) {
      std::ostringstream shown;
      shown << (v.is_number() ? x : -1.0);
      throw Error(path + ": token \"" + token + "\" has id " + (v.is_number() ? shown.str() : "(not a number)") +
                  ", expected an integer in [0, " + std::to_string(kMaxId) + ")");
    }
    return static_cast<int64_t>(x);
  };
  int64_t max_id = -1;
  impl->vocab.reserve(vocab->members().size());
  std::vector<std::pair<std::string, int64_t>> all_tokens;
  all_tokens.reserve(vocab->members().size());
  for (const auto& [token, id] : vocab->members()) {
    int64_t i = checked_id(id, token);
    impl->vocab.emplace(token, i);
    all_tokens.emplace_back(token, i);
    max_id = std::max(max_id, i);
  }

  const json::Value* added = root.find("added_tokens");
  if (added && added->is_array()) {
    for (const json::Value& t : added->items()) {
      std::string content = t.get_string("content");
      if (!t.find("id")) throw Error(path + ": added token \"" + content + "\" has no id");
      AddedToken a{content, checked_id(*t.find("id"), content), t.get_bool("single_word", false),
                   t.get_bool("lstrip", false), t.get_bool("rstrip", false), t.get_bool("normalized", false),
                   t.get_bool("special", false)};
      if (a.id < 0 || a.content.empty()) continue;
      max_id = std::max(max_id, a.id);
      impl->added_first_byte[static_cast<unsigned char>(a.content[0])] = true;
      impl->added.push_back(a);
    }
  }

  uint32_t rank = 0;
  for (const json::Value& m : merges->items()) {
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.as_string();
      size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) throw Error(path + ": malformed merge \"" + s + "\"");
      left = s.substr(0, sp), right = s.substr(sp + 1);
    } else if (m.is_array() && m.items().size() == 2) {
      left = m.items()[0].as_string(), right = m.items()[1].as_string();
    } else {
      throw Error(path + ": malformed merges entry");
    }
    auto a = impl->vocab.find(left), b = impl->vocab.find(right), ab = impl->vocab.find(left + right);
    if (a == impl->vocab.end() || b == impl->vocab.end() || ab == impl->vocab.end())
      throw Error(path + ": merge \"" + left + " " + right + "\" uses tokens missing from the vocab");
    impl->merges.emplace((static_cast<uint64_t>(a->second) << 32) | static_cast<uint64_t>(b->second),
                         std::make_pair(rank++, ab->second));
  }
  std::string unk = model->get_string("unk_token");
  if (!unk.empty())
    if (auto it = impl->vocab.find(unk); it != impl->vocab.end()) impl->unk_id = it->second;

  // Byte <-> symbol tables.
  const std::array<uint32_t, 256> byte_chars = byte_to_unicode();
  std::unordered_map<uint32_t, unsigned char> char_bytes;
  for (int b = 0; b < 256; ++b) {
    char_bytes[byte_chars[b]] = static_cast<unsigned char>(b);
    std::string s;
    uc::append_utf8(s, byte_chars[b]);
    auto it = impl->vocab.find(s);
    impl->byte_ids[b] = it == impl->vocab.end() ? -1 : it->second;
    char hex[8];
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    auto fb = impl->vocab.find(hex);
    impl->fallback_ids[b] = fb == impl->vocab.end() ? -1 : fb->second;
  }

  // Normalizer: NFC, Replace(String), Prepend, or a Sequence of them.
  std::function<void(const json::Value&)> normalizer = [&](const json::Value& n) {
    if (n.is_null()) return;
    std::string t = n.get_string("type");
    if (t == "NFC") {
      impl->normalizers.push_back({Impl::Normalize::Nfc, "", ""});
    } else if (t == "Replace" && n.find("pattern") && !n.find("pattern")->get_string("String").empty()) {
      impl->normalizers.push_back({Impl::Normalize::Replace, n.find("pattern")->get_string("String"),
                                   n.get_string("content")});
    } else if (t == "Prepend") {
      impl->normalizers.push_back({Impl::Normalize::Prepend, "", n.get_string("prepend")});
    } else if (t == "Sequence" && n.find("normalizers") && n.find("normalizers")->is_array()) {
      for (const json::Value& sub : n.find("normalizers")->items()) normalizer(sub);
    } else {
      throw unsupported("normalizer " + t);
    }
  };
  if (const json::Value* n = root.find("normalizer")) normalizer(*n);

  // Pre-tokenizer: ByteLevel (GPT-2 regex) or Split(known regex) + ByteLevel(use_regex=false).
  bool byte_level = false;
  std::function<void(const json::Value&)> pre = [&](const json::Value& p) {
    std::string t = p.get_string("type");
    if (t == "ByteLevel") {
      byte_level = true;
      impl->steps.push_back({p.get_bool("use_regex", true), p.get_bool("add_prefix_space", false), false, Pattern::Gpt2, ""});
    } else if (t == "Split" && p.find("pattern") && !p.find("pattern")->get_string("String").empty()) {
      if (p.get_string("behavior") != "MergedWithPrevious" || p.get_bool("invert", false))
        throw unsupported("Split on a string with behavior " + p.get_string("behavior"));
      impl->steps.push_back({false, false, false, Pattern::Gpt2, p.find("pattern")->get_string("String")});
    } else if (t == "Split") {
      const json::Value* pat = p.find("pattern");
      std::string regex = pat ? pat->get_string("Regex") : "";
      Pattern which;
      if (regex == kGpt2Pattern) which = Pattern::Gpt2;
      else if (regex == kLlama3Pattern) which = Pattern::Llama3;
      else if (regex == kQwen2Pattern) which = Pattern::Qwen2;
      else throw unsupported("Split pre-tokenizer pattern " + (regex.empty() ? std::string("(not a regex)") : regex));
      if (p.get_string("behavior") != "Isolated" || p.get_bool("invert", false))
        throw unsupported("Split behavior " + p.get_string("behavior"));
      impl->steps.push_back({false, false, true, which, ""});
    } else if (t == "Sequence" && p.find("pretokenizers") && p.find("pretokenizers")->is_array()) {
      for (const json::Value& sub : p.find("pretokenizers")->items()) pre(sub);
    } else {
      throw unsupported("pre-tokenizer " + (t.empty() ? std::string("null") : t));
    }
  };
  if (const json::Value* p = root.find("pre_tokenizer"); p && !p->is_null()) pre(*p);
  impl->byte_level = byte_level;
  // Decoder: ByteLevel, or SentencePiece's Replace("▁" -> " ") + ByteFallback + Fuse (each id's bytes fixed).
  std::string space_marker;
  if (const json::Value* d = root.find("decoder"); d && !d->is_null()) {
    std::string t = d->get_string("type");
    bool ok = t == "ByteLevel" && byte_level;
    if (t == "Sequence" && d->find("decoders")) {
      ok = true;
      for (const json::Value& sub : d->find("decoders")->items()) {
        std::string s = sub.get_string("type");
        if (s == "Replace" && sub.find("pattern") && sub.get_string("content") == " ")
          space_marker = sub.find("pattern")->get_string("String");
        else if (s == "ByteLevel") ok = ok && byte_level;
        else if (s != "ByteFallback" && s != "Fuse") ok = false;  // e.g. Strip: not a per-token mapping
      }
    }
    if (!ok) throw unsupported("decoder " + t);
  }
  if (!byte_level && !impl->byte_fallback) throw unsupported("a tokenizer with neither ByteLevel nor byte_fallback");
  auto to_bytes = [&](const std::string& token) {
    if (!byte_level) {  // <0xXX> is that byte; the space marker is a space
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>' && std::isxdigit(token[3]) &&
          std::isxdigit(token[4]))
        return std::string(1, static_cast<char>(std::stoi(token.substr(3, 2), nullptr, 16)));
      std::string out;
      for (size_t i = 0; i < token.size();) {
        if (!space_marker.empty() && token.compare(i, space_marker.size(), space_marker) == 0) {
          out += ' ';
          i += space_marker.size();
        } else {
          out += token[i++];
        }
      }
      return out;
    }
    std::string bytes;  // the ByteLevel decoder (raw text for tokens outside its alphabet, e.g. added ones)
    for (uint32_t cp : uc::decode_utf8(token)) {
      auto it = char_bytes.find(cp);
      if (it == char_bytes.end()) return token;
      bytes += static_cast<char>(it->second);
    }
    return bytes;
  };
  impl->id_bytes.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : all_tokens) impl->id_bytes[id] = to_bytes(token);
  for (const AddedToken& a : impl->added) impl->id_bytes[a.id] = byte_level ? to_bytes(a.content) : a.content;

  // tokenizer_config.json: special tokens, add_bos_token, chat template.
  std::string dir = dirname(path);
  std::optional<bool> add_bos;
  if (file_exists(dir + "/tokenizer_config.json")) {
    json::Value cfg = parse_json(dir + "/tokenizer_config.json", "tokenizer_config.json");
    impl->bos_token = token_content(cfg.find("bos_token"));
    impl->eos_token = token_content(cfg.find("eos_token"));
    if (const json::Value* v = cfg.find("add_bos_token"); v && v->is_bool()) add_bos = v->as_bool();
    if (const json::Value* v = cfg.find("chat_template")) {
      if (v->is_string()) {
        impl->chat_template = v->as_string();
      } else if (v->is_array()) {
        for (const json::Value& named : v->items())
          if (impl->chat_template.empty() || named.get_string("name") == "default")
            impl->chat_template = named.get_string("template");
      }
    }
  }
  if (file_exists(dir + "/chat_template.jinja")) impl->chat_template = read_file(dir + "/chat_template.jinja", "chat template");
  if (!add_bos) {  // no flag: follow the post-processor (does it put BOS first?)
    add_bos = false;
    std::function<void(const json::Value&)> post = [&](const json::Value& p) {
      if (p.get_string("type") == "TemplateProcessing") {
        const json::Value* single = p.find("single");
        if (single && single->is_array() && !single->items().empty())
          if (const json::Value* st = single->items()[0].find("SpecialToken"))
            add_bos = !impl->bos_token.empty() && st->get_string("id") == impl->bos_token;
      } else if (const json::Value* subs = p.find("processors"); subs && subs->is_array()) {
        for (const json::Value& sub : subs->items()) post(sub);
      }
    };
    if (const json::Value* p = root.find("post_processor"); p && !p->is_null()) post(*p);
  }
  impl->add_bos = *add_bos;
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int64_t> Tokenizer::encode(std::string_view text, std::optional<bool> add_bos) const {
  std::vector<int64_t> ids;
  if (add_bos.value_or(impl_->add_bos))
    if (auto bos = token_id(impl_->bos_token)) ids.push_back(*bos);
  impl_->encode_text(std::string(text), ids);
  return ids;
}

const std::string& Tokenizer::token_bytes(int64_t id) const {
  static const std::string kEmpty;
  return id >= 0 && static_cast<size_t>(id) < impl_->id_bytes.size() ? impl_->id_bytes[id] : kEmpty;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += token_bytes(id);
  return out;
}

std::optional<int64_t> Tokenizer::token_id(std::string_view token) const {
  if (token.empty()) return std::nullopt;
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_bytes.size()); }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
bool Tokenizer::add_bos_token() const { return impl_->add_bos; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::string& Tokenizer::path() const { return impl_->path; }

}  // namespace zoo
