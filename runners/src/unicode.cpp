#include "zoo/unicode.h"

#include <algorithm>

namespace zoo::unicode {
namespace {

struct CodeRange {
  uint32_t first, last;
};
struct Decomposition {
  uint32_t cp;
  uint16_t offset, length;
};
struct CombiningClass {
  uint32_t cp;
  uint8_t ccc;
};
struct Composition {
  uint32_t first, second, composite;
};

#include "unicode_data.inc"

template <size_t N>
bool in_ranges(const CodeRange (&table)[N], uint32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](uint32_t c, const CodeRange& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                             [](const CombiningClass& c, uint32_t v) { return c.cp < v; });
  return it != std::end(kCombiningClasses) && it->cp == cp ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                             [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it != std::end(kDecompositions) && it->cp == cp)
    out.insert(out.end(), kDecompData + it->offset, kDecompData + it->offset + it->length);
  else
    out.push_back(cp);
}

// The primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::make_pair(a, b),
                             [](const Composition& c, const std::pair<uint32_t, uint32_t>& v) {
                               return c.first < v.first || (c.first == v.first && c.second < v.second);
                             });
  return it != std::end(kCompositions) && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

namespace {

// The code point starting at s[i] and its length in bytes; 0 bytes if the sequence there is malformed.
size_t decode_at(std::string_view s, size_t i, uint32_t* cp) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n;
  if (c < 0x80) *cp = c, n = 1;
  else if ((c & 0xE0) == 0xC0) *cp = c & 0x1F, n = 2;
  else if ((c & 0xF0) == 0xE0) *cp = c & 0x0F, n = 3;
  else if ((c & 0xF8) == 0xF0) *cp = c & 0x07, n = 4;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (d & 0x3F);
  }
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  bool ok = *cp >= kMin[n] && *cp <= 0x10FFFF && !(*cp >= 0xD800 && *cp < 0xE000);
  return ok ? n : 0;
}

}  // namespace

std::vector<uint32_t> decode_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    size_t n = decode_at(s, i, &cp);
    out.push_back(n ? cp : 0xFFFD);
    i += n ? n : 1;
  }
  return out;
}

size_t invalid_utf8_at(std::string_view s) {
  uint32_t cp;
  for (size_t i = 0, n; i < s.size(); i += n)
    if (!(n = decode_at(s, i, &cp))) return i;
  return std::string_view::npos;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const uint32_t* cps, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) append_utf8(out, cps[i]);
  return out;
}

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetters, cp);
}

bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumbers, cp);
}

bool is_whitespace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0xCC; }))
    return std::string(text);  // every code point is below U+0300: already NFC
  std::vector<uint32_t> cps;
  for (uint32_t cp : decode_utf8(text)) decompose(cp, cps);
  // Canonical ordering: stable-sort each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless something between them blocks it
  // (after reordering, it is blocked iff the previous character has class 0 or >= its own).
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;
  for (uint32_t cp : cps) {
    int ccc = combining_class(cp);
    if (starter != SIZE_MAX) {
      int prev = out.size() - 1 == starter ? -1 : combining_class(out.back());
      if (prev == -1 || (prev != 0 && prev < ccc)) {
        if (uint32_t c = compose(out[starter], cp)) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (ccc == 0) starter = out.size();
    out.push_back(cp);
  }
  return encode_utf8(out.data(), out.size());
}

size_t complete_utf8_prefix(std::string_view s) {
  // Walk back over at most 3 trailing continuation bytes to the last lead byte.
  size_t n = s.size();
  size_t k = 0;
  while (k < 3 && k < n && (static_cast<unsigned char>(s[n - 1 - k]) & 0xC0) == 0x80) ++k;
  if (k == n) return n;
  unsigned char lead = static_cast<unsigned char>(s[n - 1 - k]);
  size_t need = lead >= 0xF0 && lead < 0xF8 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  if (lead < 0xC0 || lead >= 0xF8) return n;  // ASCII or a stray byte: nothing to wait for
  return k + 1 < need ? n - 1 - k : n;
}

}  // namespace zoo::unicode
