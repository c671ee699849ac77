// A minimal JSON reader: enough for tokenizer.json / tokenizer_config.json (UTF-8, \u escapes, nesting).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zoo::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  bool as_bool() const { return bool_; }
  double as_number() const { return number_; }
  int64_t as_int() const { return static_cast<int64_t>(number_); }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& items() const { return array_; }
  const std::vector<std::pair<std::string, Value>>& members() const { return object_; }

  // Object member, or nullptr when absent (or when this is not an object).
  const Value* find(std::string_view key) const;
  // Convenience accessors with defaults for absent/mistyped members.
  std::string get_string(std::string_view key, const std::string& fallback = "") const;
  bool get_bool(std::string_view key, bool fallback) const;

 private:
  friend class Parser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
};

// Parses `text`; throws std::runtime_error("line L column C: ...") on malformed input.
Value parse(std::string_view text);

}  // namespace zoo::json
