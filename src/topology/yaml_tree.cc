#include "topology/yaml_tree.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <map>
#include <sstream>

namespace converge::topology {

const std::string& Y::Scalar() const {
  static const std::string kEmpty;
  return IsScalar() ? n_->scalar : kEmpty;
}

size_t Y::size() const {
  if (IsSequence()) return n_->items.size();
  if (IsMap()) return n_->items.size() / 2;
  return 0;
}

Y Y::operator[](size_t i) const {
  if (!IsSequence() || i >= n_->items.size()) return Y();
  return Y(n_->items[i]);
}

Y Y::Get(std::string_view key) const {
  if (!IsMap()) return Y();
  for (size_t i = 0; i + 1 < n_->items.size(); i += 2) {
    const YamlNode* k = n_->items[i];
    if (k->kind == YamlNode::kScalar && k->scalar == key) return Y(n_->items[i + 1]);
  }
  return Y();
}

YIterator Y::begin() const {
  static const std::vector<const YamlNode*> kNone;
  return IsMap() ? YIterator(&n_->items, 0) : YIterator(&kNone, 0);
}

YIterator Y::end() const {
  static const std::vector<const YamlNode*> kNone;
  return IsMap() ? YIterator(&n_->items, n_->items.size()) : YIterator(&kNone, 0);
}

class YamlTreeBuilder : public YAML::EventHandler {
 public:
  explicit YamlTreeBuilder(YamlTree* tree) : tree_(tree) {}

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Add(New(YamlNode::kNull, mark, anchor));
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    if (it == anchors_.end()) throw YAML::ParserException(mark, "unknown alias");
    Add(it->second);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    YamlNode* n = New(YamlNode::kScalar, mark, anchor);
    n->scalar = value;
    n->quoted = tag != "?" && tag != "";
    Add(n);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    YamlNode* n = New(YamlNode::kSequence, mark, anchor);
    Add(n);
    open_.push_back(n);
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    YamlNode* n = New(YamlNode::kMap, mark, anchor);
    Add(n);
    open_.push_back(n);
  }
  void OnMapEnd() override {
    // A key given twice would silently lose one of the declarations: refused.
    const YamlNode* map = open_.back();
    open_.pop_back();
    std::vector<const YamlNode*> keys;
    for (size_t i = 0; i < map->items.size(); i += 2) {
      if (map->items[i]->kind == YamlNode::kScalar) keys.push_back(map->items[i]);
    }
    std::sort(keys.begin(), keys.end(),
              [](const YamlNode* a, const YamlNode* b) { return a->scalar < b->scalar; });
    for (size_t i = 1; i < keys.size(); ++i) {
      if (keys[i]->scalar == keys[i - 1]->scalar) {
        YAML::Mark mark;
        mark.line = std::max(keys[i]->line, keys[i - 1]->line);
        throw YAML::ParserException(mark,
                                    "key '" + keys[i]->scalar + "' appears twice in one mapping");
      }
    }
  }

 private:
  YamlNode* New(YamlNode::Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
    YamlNode* n = &tree_->nodes_.emplace_back();
    n->kind = kind;
    n->line = mark.line;
    if (anchor != YAML::NullAnchor) anchors_[anchor] = n;
    return n;
  }
  void Add(const YamlNode* n) {
    if (open_.empty()) {
      tree_->root_ = n;
    } else {
      open_.back()->items.push_back(n);
    }
  }

  YamlTree* tree_;
  std::vector<YamlNode*> open_;
  std::map<YAML::anchor_t, const YamlNode*> anchors_;
};

Result<std::unique_ptr<YamlTree>> YamlTree::Parse(std::string_view text, const std::string& file) {
  auto tree = std::make_unique<YamlTree>();
  std::istringstream in{std::string(text)};
  try {
    YAML::Parser parser(in);
    YamlTreeBuilder builder(tree.get());
    if (!parser.HandleNextDocument(builder)) {
      return InvalidArgumentError(file + ":1: empty document");
    }
    struct Ignore : YAML::EventHandler {
      bool seen = false;
      void OnDocumentStart(const YAML::Mark&) override { seen = true; }
      void OnDocumentEnd() override {}
      void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
      void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
      void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    const std::string&) override {}
      void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                           YAML::EmitterStyle::value) override {}
      void OnSequenceEnd() override {}
      void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                      YAML::EmitterStyle::value) override {}
      void OnMapEnd() override {}
    } ignore;
    if (parser.HandleNextDocument(ignore)) {
      return InvalidArgumentError(file + ": more than one YAML document (one manifest per file)");
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(file + ":" + std::to_string(e.mark.line + 1) +
                                ": not valid YAML: " + e.msg);
  }
  if (tree->root_ == nullptr) return InvalidArgumentError(file + ":1: empty document");
  return tree;
}

}  // namespace converge::topology
