#pragma once

#include <stdexcept>
#include <string>

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

}  // namespace zoo
