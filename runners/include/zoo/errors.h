#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

namespace zoo {

// A problem the user can fix (missing file, wrong format, prompt too long): printed as one line, exit 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A command-line mistake: printed with the usage, exit 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `text` with what would break it into several lines escaped as \xNN: ASCII control bytes, and the UTF-8 of U+0085,
// U+2028 and U+2029 (error messages quote file contents; each error must stay one line wherever it is read).
inline std::string one_line(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    bool breaks = c < 0x20 || c == 0x7f || text.substr(i, 2) == "\xc2\x85" || text.substr(i, 3) == "\xe2\x80\xa8" ||
                  text.substr(i, 3) == "\xe2\x80\xa9";
    if (!breaks) {
      out += static_cast<char>(c);
      continue;
    }
    size_t n = c < 0x80 ? 1 : c == 0xc2 ? 2 : 3;
    for (size_t k = 0; k < n; ++k) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(text[i + k]));
      out += buf;
    }
    i += n - 1;
  }
  return out;
}

// Prints `error: <message>` as one line on stderr.
inline void print_error(std::string_view message) {
  std::fprintf(stderr, "error: %s\n", one_line(message).c_str());
}

}  // namespace zoo
