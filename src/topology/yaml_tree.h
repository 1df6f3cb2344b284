// A read-only YAML document tree, built from yaml-cpp's event parser. yaml-cpp's own Node
// allocates a shared, mutable node graph per value, which made reading a thousand manifests
// several times slower than parsing them; this tree is a flat vector of nodes. Anchors and
// aliases are kept (an alias shares its anchor's node).
//
// Contract: Parse never throws; a syntax error, or a key repeated in one mapping, gives
// InvalidArgument "FILE:LINE: ...".
// `Y` is a handle (pointer-sized, copyable) into a tree that must outlive it; a default Y is
// "absent" (what reading a missing key gives).
// Thread-safety: a tree is immutable after Parse.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/status.h"

namespace converge::topology {

struct YamlNode {
  enum Kind : uint8_t { kNull, kScalar, kSequence, kMap } kind = kNull;
  bool quoted = false;  // a quoted (or explicitly tagged) scalar: always a string
  int line = 0;         // 0-based
  std::string scalar;
  std::vector<const YamlNode*> items;  // sequence: items; map: key, value, key, value, ...
};

class YIterator;

class Y {
 public:
  Y() = default;
  explicit Y(const YamlNode* n) : n_(n) {}

  explicit operator bool() const { return n_ != nullptr; }
  bool operator!() const { return n_ == nullptr; }
  bool IsNull() const { return n_ != nullptr && n_->kind == YamlNode::kNull; }
  bool IsScalar() const { return n_ != nullptr && n_->kind == YamlNode::kScalar; }
  bool IsSequence() const { return n_ != nullptr && n_->kind == YamlNode::kSequence; }
  bool IsMap() const { return n_ != nullptr && n_->kind == YamlNode::kMap; }
  bool quoted() const { return n_ != nullptr && n_->quoted; }
  int line() const { return n_ == nullptr ? -1 : n_->line; }
  const std::string& Scalar() const;
  // Items of a sequence, pairs of a map; 0 otherwise.
  size_t size() const;
  Y operator[](size_t i) const;  // sequence item; absent when out of range
  // The value of a map's key (scalar keys only); absent otherwise.
  Y Get(std::string_view key) const;
  void reset(Y other) { n_ = other.n_; }

  // Iterates a map's pairs (nothing for other kinds).
  YIterator begin() const;
  YIterator end() const;

 private:
  const YamlNode* n_ = nullptr;
};

struct YPair {
  Y first;
  Y second;
};

class YIterator {
 public:
  YIterator(const std::vector<const YamlNode*>* items, size_t i) : items_(items), i_(i) {}
  YPair operator*() const { return YPair{Y((*items_)[i_]), Y((*items_)[i_ + 1])}; }
  YIterator& operator++() {
    i_ += 2;
    return *this;
  }
  bool operator!=(const YIterator& o) const { return i_ != o.i_; }

 private:
  const std::vector<const YamlNode*>* items_;
  size_t i_;
};

class YamlTree {
 public:
  // One YAML document (a second one in the text is an error). `file` names errors.
  static Result<std::unique_ptr<YamlTree>> Parse(std::string_view text, const std::string& file);
  Y root() const { return Y(root_); }

 private:
  friend class YamlTreeBuilder;
  std::deque<YamlNode> nodes_;  // stable addresses
  const YamlNode* root_ = nullptr;
};

}  // namespace converge::topology
