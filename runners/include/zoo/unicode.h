// UTF-8 and the Unicode properties the tokenizer needs (generated tables, Unicode 14).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zoo::unicode {

// Code points of `text`; malformed UTF-8 bytes decode to U+FFFD.
std::vector<uint32_t> decode_utf8(std::string_view text);
// Offset of the first malformed UTF-8 byte of `text`, or std::string_view::npos if it is all well-formed.
size_t invalid_utf8_at(std::string_view text);
void append_utf8(std::string& out, uint32_t cp);
std::string encode_utf8(const uint32_t* cps, size_t n);

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_whitespace(uint32_t cp);  // \s (Unicode White_Space)

// Unicode Normalization Form C.
std::string nfc(std::string_view text);

// Length of the longest prefix of `bytes` that is complete UTF-8 or definitely malformed (so it can be
// printed now); what remains is the start of a character whose continuation bytes have not arrived yet.
size_t complete_utf8_prefix(std::string_view bytes);

}  // namespace zoo::unicode
