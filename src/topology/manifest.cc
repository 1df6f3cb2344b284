#include "topology/manifest.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "schema/json_pointer.h"
#include "topology/yaml_tree.h"

#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string

namespace converge::topology {

using schema::EscapePointerToken;
namespace {

namespace json = boost::json;

// Deepest nesting of a payload schema converted to JSON (bounds the recursion).
constexpr int kMaxSchemaDepth = 64;
// Most JSON nodes the payload schemas of one manifest may expand to.
constexpr size_t kMaxSchemaNodes = 1'000'000;
// Longest chain of `$ref`s followed to reach a channel, message or schema.
constexpr int kMaxRefHops = 32;

Y Get(const Y& map, const std::string& key) { return map.Get(key); }


std::string Child(const std::string& pointer, std::string_view key) {
  return pointer + "/" + EscapePointerToken(key);
}

class Parser {
 public:
  Parser(std::string file, Y root) : file_(std::move(file)), root_(std::move(root)) {}

  Result<Service> Run();

 private:
  Status Error(const Y& node, const std::string& pointer, std::string_view what) const {
    std::string msg = file_;
    if (node && node.line() >= 0) msg += ":" + std::to_string(node.line() + 1);
    msg.append(": ");
    msg.append(pointer.empty() ? std::string_view("/") : std::string_view(pointer));
    msg.append(": ");
    msg.append(what);
    return InvalidArgumentError(msg);
  }
  Where At(const std::string& pointer) const { return Where{file_, pointer}; }

  Result<std::string> String(const Y& node, const std::string& pointer) const {
    if (!node || !node.IsScalar() || node.Scalar().empty()) {
      return Error(node, pointer, "must be a non-empty string");
    }
    return node.Scalar();
  }
  // A name of a service, topic, collection or saga: printable, no spaces.
  Result<std::string> NameAt(const Y& node, const std::string& pointer) const {
    CONVERGE_ASSIGN_OR_RETURN(std::string s, String(node, pointer));
    if (s.size() > 255) return Error(node, pointer, "is longer than 255 bytes");
    for (unsigned char c : s) {
      if (c <= ' ' || c == 0x7f) return Error(node, pointer, "must not contain spaces or controls");
    }
    return s;
  }
  Status CheckMap(const Y& node, const std::string& pointer) const {
    if (!node.IsMap()) return Error(node, pointer, "must be a mapping");
    return Status::Ok();
  }
  Status CheckKeys(const Y& node, const std::string& pointer,
                   const std::set<std::string>& allowed) const {
    CONVERGE_RETURN_IF_ERROR(CheckMap(node, pointer));
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      if (!allowed.count(key)) return Error(kv.first, Child(pointer, key), "unknown key");
    }
    return Status::Ok();
  }

  // Resolves "#/a/b" within the document. The node, or an error naming `pointer` (where the
  // reference was written).
  Result<Y> Resolve(const Y& ref_node, const std::string& pointer, std::string* target) const;
  // Follows `$ref`s from `node` (written at `pointer`) to the object they name; `*where`
  // becomes the pointer of the node returned.
  Result<Y> Follow(Y node, std::string* where) const;

  Status ParseChannels();
  Result<Operation> ParseOperation(const std::string& id, const Y& op, const std::string& pointer,
                                   bool* send);
  Result<Message> ParseMessage(const std::string& name, const Y& node, const std::string& pointer);
  Result<json::value> ToJson(const Y& node, const std::string& pointer, int depth,
                             std::vector<std::string>* refs_in_progress);
  Result<std::vector<Name>> Names(const Y& node, const std::string& pointer,
                                  const char* key_of_map = nullptr);
  Status ParseExtensions(Service* s);

  struct Channel {
    std::string address;
    std::vector<Message> messages;
  };
  std::string file_;
  Y root_;
  std::map<std::string, Channel> channels_;  // by key
  // Converted payloads by the pointer of their message object (after $refs).
  std::map<std::string, std::shared_ptr<const json::value>> payloads_;
  size_t json_nodes_ = 0;  // converted so far (kMaxSchemaNodes)
};

Result<Y> Parser::Resolve(const Y& ref_node, const std::string& pointer,
                          std::string* target) const {
  if (!ref_node.IsScalar()) return Error(ref_node, pointer, "$ref must be a string");
  const std::string ref = ref_node.Scalar();
  if (ref.empty() || ref[0] != '#') {
    return Error(ref_node, pointer,
                 "$ref '" + ref + "': only references within the document ('#/...') are supported");
  }
  if (ref.size() > 1 && ref[1] != '/') {
    return Error(ref_node, pointer, "$ref '" + ref + "' is not a JSON pointer");
  }
  Y cur = root_;
  size_t pos = 1;
  while (pos < ref.size()) {
    size_t next = ref.find('/', pos + 1);
    if (next == std::string::npos) next = ref.size();
    std::string seg;
    for (size_t i = pos + 1; i < next; ++i) {
      if (ref[i] == '~' && i + 1 < next && (ref[i + 1] == '0' || ref[i + 1] == '1')) {
        seg.push_back(ref[i + 1] == '0' ? '~' : '/');
        ++i;
      } else {
        seg.push_back(ref[i]);
      }
    }
    pos = next;
    Y child;
    bool found = false;
    if (cur.IsMap()) {
      for (const auto& kv : cur) {
        if (kv.first.IsScalar() && kv.first.Scalar() == seg) {
          child.reset(kv.second);
          found = true;
          break;
        }
      }
    } else if (cur.IsSequence()) {
      size_t i = 0;
      bool digits = !seg.empty() && seg.size() < 10;
      for (char c : seg) digits = digits && c >= '0' && c <= '9';
      if (digits) i = std::stoul(seg);
      if (digits && i < cur.size()) {
        child.reset(cur[i]);
        found = true;
      }
    }
    if (!found) return Error(ref_node, pointer, "$ref '" + ref + "' names nothing in the document");
    cur.reset(child);
  }
  *target = ref.substr(1);
  return cur;
}

Result<Y> Parser::Follow(Y node, std::string* where) const {
  for (int hop = 0; hop <= kMaxRefHops; ++hop) {
    if (!node.IsMap()) return node;
    const Y ref = Get(node, "$ref");
    if (!ref) return node;
    std::string target;
    CONVERGE_ASSIGN_OR_RETURN(Y to, Resolve(ref, Child(*where, "$ref"), &target));
    node.reset(to);
    *where = target;
  }
  return Error(node, *where, "more than " + std::to_string(kMaxRefHops) + " chained $refs");
}

Result<json::value> Parser::ToJson(const Y& node, const std::string& pointer, int depth,
                                   std::vector<std::string>* refs) {
  // Aliases can make a small document expand exponentially (or loop): bound the work.
  if (++json_nodes_ > kMaxSchemaNodes) {
    return Error(
        node, pointer,
        "payload schemas expand past " + std::to_string(kMaxSchemaNodes) + " nodes (aliases?)");
  }
  if (depth > kMaxSchemaDepth) {
    return Error(node, pointer, "schema nested deeper than " + std::to_string(kMaxSchemaDepth));
  }
  if (!node || node.IsNull()) return json::value(nullptr);
  if (node.IsScalar()) {
    const std::string& s = node.Scalar();
    if (node.quoted()) return json::value(s);  // quoted: always a string
    if (s == "null" || s == "~" || s.empty()) return json::value(nullptr);
    if (s == "true") return json::value(true);
    if (s == "false") return json::value(false);
    json::error_code ec;
    json::value number = json::parse(s, ec);
    if (!ec && number.is_number()) return number;
    return json::value(s);
  }
  if (node.IsSequence()) {
    json::array a;
    for (size_t i = 0; i < node.size(); ++i) {
      CONVERGE_ASSIGN_OR_RETURN(
          json::value v, ToJson(node[i], Child(pointer, std::to_string(i)), depth + 1, refs));
      a.push_back(std::move(v));
    }
    return json::value(std::move(a));
  }
  {
    if (const Y ref = Get(node, "$ref"); ref && node.size() == 1) {
      std::string target;
      CONVERGE_ASSIGN_OR_RETURN(Y to, Resolve(ref, Child(pointer, "$ref"), &target));
      if (std::find(refs->begin(), refs->end(), target) != refs->end()) {
        return Error(ref, Child(pointer, "$ref"),
                     "recursive schema reference '#" + target + "' is not supported");
      }
      refs->push_back(target);
      Result<json::value> v = ToJson(to, target, depth + 1, refs);
      refs->pop_back();
      return v;
    }
    json::object o;
    for (const auto& kv : node) {
      const std::string key = kv.first.Scalar();
      if (key == "$ref") {
        return Error(kv.first, Child(pointer, key), "$ref beside other keys is not supported");
      }
      CONVERGE_ASSIGN_OR_RETURN(json::value v,
                                ToJson(kv.second, Child(pointer, key), depth + 1, refs));
      o[key] = std::move(v);
    }
    return json::value(std::move(o));
  }
}

Result<Message> Parser::ParseMessage(const std::string& name, const Y& node,
                                     const std::string& pointer) {
  std::string where = pointer;
  CONVERGE_ASSIGN_OR_RETURN(Y msg, Follow(node, &where));
  CONVERGE_RETURN_IF_ERROR(CheckMap(msg, where));
  Message m;
  m.name = name;
  m.where = At(where);
  if (auto it = payloads_.find(where); it != payloads_.end()) {
    m.payload = it->second;
    return m;
  }
  const Y payload = Get(msg, "payload");
  if (!payload || payload.IsNull()) return m;
  std::string payload_at = Child(where, "payload");
  Y schema = payload;
  // The multi-format form {schemaFormat, schema}: only JSON Schema formats are read.
  if (payload.IsMap() && Get(payload, "schemaFormat")) {
    const std::string format =
        Get(payload, "schemaFormat").IsScalar() ? Get(payload, "schemaFormat").Scalar() : "";
    if (format.rfind("application/schema+json", 0) != 0 &&
        format.rfind("application/vnd.aai.asyncapi", 0) != 0) {
      return Error(Get(payload, "schemaFormat"), Child(payload_at, "schemaFormat"),
                   "schema format '" + format + "' is not supported (JSON Schema only)");
    }
    schema.reset(Get(payload, "schema"));
    payload_at = Child(payload_at, "schema");
    if (!schema) return Error(payload, payload_at, "is missing");
  }
  std::vector<std::string> refs;
  CONVERGE_ASSIGN_OR_RETURN(json::value payload_json, ToJson(schema, payload_at, 0, &refs));
  if (!payload_json.is_object() && !payload_json.is_bool()) {
    return Error(schema, payload_at, "a payload schema must be an object or a boolean");
  }
  m.payload = std::make_shared<const json::value>(std::move(payload_json));
  payloads_.emplace(where, m.payload);
  return m;
}

Status Parser::ParseChannels() {
  const Y channels = Get(root_, "channels");
  if (!channels || channels.IsNull()) return Status::Ok();
  CONVERGE_RETURN_IF_ERROR(CheckMap(channels, "/channels"));
  for (const auto& kv : channels) {
    const std::string key = kv.first.Scalar();
    std::string where = Child("/channels", key);
    CONVERGE_ASSIGN_OR_RETURN(Y ch, Follow(kv.second, &where));
    CONVERGE_RETURN_IF_ERROR(CheckMap(ch, where));
    Channel c;
    const Y address = Get(ch, "address");
    if (!address || address.IsNull()) {
      return Error(ch, Child(where, "address"),
                   "a channel needs an address (the converge topic it stands for)");
    }
    CONVERGE_ASSIGN_OR_RETURN(c.address, NameAt(address, Child(where, "address")));
    if (c.address.find('{') != std::string::npos) {
      return Error(address, Child(where, "address"),
                   "address parameters ('{...}') are not supported: name the topic");
    }
    if (const Y msgs = Get(ch, "messages"); msgs && !msgs.IsNull()) {
      CONVERGE_RETURN_IF_ERROR(CheckMap(msgs, Child(where, "messages")));
      for (const auto& m : msgs) {
        const std::string name = m.first.Scalar();
        CONVERGE_ASSIGN_OR_RETURN(
            Message msg, ParseMessage(name, m.second, Child(Child(where, "messages"), name)));
        c.messages.push_back(std::move(msg));
      }
    }
    channels_[key] = std::move(c);
  }
  return Status::Ok();
}

Result<Operation> Parser::ParseOperation(const std::string& id, const Y& node,
                                         const std::string& pointer, bool* send) {
  std::string where = pointer;
  CONVERGE_ASSIGN_OR_RETURN(Y op, Follow(node, &where));
  CONVERGE_RETURN_IF_ERROR(CheckMap(op, where));
  Operation o;
  o.id = id;
  o.where = At(pointer);
  CONVERGE_ASSIGN_OR_RETURN(std::string action, String(Get(op, "action"), Child(where, "action")));
  if (action != "send" && action != "receive") {
    return Error(Get(op, "action"), Child(where, "action"), "must be 'send' or 'receive'");
  }
  *send = action == "send";
  const Y channel = Get(op, "channel");
  const std::string channel_at = Child(where, "channel");
  if (!channel || !channel.IsMap() || !Get(channel, "$ref")) {
    return Error(channel, channel_at, "must be a reference {$ref: '#/channels/NAME'}");
  }
  std::string target;
  CONVERGE_ASSIGN_OR_RETURN(Y ignored,
                            Resolve(Get(channel, "$ref"), Child(channel_at, "$ref"), &target));
  (void)ignored;
  if (target.rfind("/channels/", 0) != 0 ||
      target.find('/', std::string("/channels/").size()) != std::string::npos) {
    return Error(Get(channel, "$ref"), Child(channel_at, "$ref"),
                 "must name a channel ('#/channels/NAME')");
  }
  for (const auto& [key, ch] : channels_) {
    if (Child("/channels", key) == target) {
      o.channel = key;
      o.topic = ch.address;
      break;
    }
  }
  if (o.topic.empty()) return Error(channel, channel_at, "names an unknown channel");
  const Channel& ch = channels_.at(o.channel);
  // The operation's messages are a subset of the channel's; none listed = all of them.
  if (const Y msgs = Get(op, "messages"); msgs && !msgs.IsNull()) {
    if (!msgs.IsSequence()) return Error(msgs, Child(where, "messages"), "must be a list of $refs");
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string at = Child(Child(where, "messages"), std::to_string(i));
      if (!msgs[i].IsMap() || !Get(msgs[i], "$ref")) return Error(msgs[i], at, "must be a $ref");
      std::string t;
      CONVERGE_ASSIGN_OR_RETURN(Y n, Resolve(Get(msgs[i], "$ref"), Child(at, "$ref"), &t));
      (void)n;
      const std::string prefix = Child(Child("/channels", o.channel), "messages") + "/";
      const Message* found = nullptr;
      for (const Message& m : ch.messages) {
        if (t == prefix + EscapePointerToken(m.name)) found = &m;
      }
      if (found == nullptr) {
        return Error(msgs[i], at,
                     "must name a message of the operation's channel ('#" + prefix + "NAME')");
      }
      o.messages.push_back(*found);
    }
  } else {
    o.messages = ch.messages;
  }
  for (const auto& kv : op) {
    const std::string key = kv.first.Scalar();
    if (key.rfind("x-converge-", 0) == 0 && key != "x-converge-publishes") {
      return Error(kv.first, Child(where, key), "unknown converge extension");
    }
  }
  return o;
}

Result<std::vector<Name>> Parser::Names(const Y& node, const std::string& pointer,
                                        const char* key_of_map) {
  std::vector<Name> out;
  if (!node || node.IsNull()) return out;
  if (!node.IsSequence()) return Error(node, pointer, "must be a list");
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string at = Child(pointer, std::to_string(i));
    Y item = node[i];
    std::string item_at = at;
    if (key_of_map != nullptr && item.IsMap()) {
      CONVERGE_RETURN_IF_ERROR(CheckKeys(item, at, {key_of_map, "description"}));
      item_at = Child(at, key_of_map);
      item.reset(Get(node[i], key_of_map));
    }
    CONVERGE_ASSIGN_OR_RETURN(std::string name, NameAt(item, item_at));
    out.push_back(Name{std::move(name), At(at)});
  }
  return out;
}

Status Parser::ParseExtensions(Service* s) {
  for (const auto& kv : root_) {
    const std::string key = kv.first.Scalar();
    const std::string at = Child("", key);
    const Y& v = kv.second;
    if (key == "x-converge-owns") {
      CONVERGE_RETURN_IF_ERROR(CheckKeys(v, at, {"topics", "collections"}));
      CONVERGE_ASSIGN_OR_RETURN(s->owned_topics, Names(Get(v, "topics"), Child(at, "topics")));
      CONVERGE_ASSIGN_OR_RETURN(s->owned_collections,
                                Names(Get(v, "collections"), Child(at, "collections")));
    } else if (key == "x-converge-writes") {
      CONVERGE_RETURN_IF_ERROR(CheckKeys(v, at, {"collections"}));
      CONVERGE_ASSIGN_OR_RETURN(s->written_collections,
                                Names(Get(v, "collections"), Child(at, "collections")));
    } else if (key == "x-converge-calls") {
      CONVERGE_ASSIGN_OR_RETURN(s->calls, Names(v, at, "service"));
    } else if (key == "x-converge-replicas") {
      if (!v.IsSequence()) return Error(v, at, "must be a list");
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string item = Child(at, std::to_string(i));
        CONVERGE_RETURN_IF_ERROR(CheckKeys(v[i], item, {"collection", "source", "description"}));
        Replica r;
        CONVERGE_ASSIGN_OR_RETURN(r.collection,
                                  NameAt(Get(v[i], "collection"), Child(item, "collection")));
        CONVERGE_ASSIGN_OR_RETURN(r.source, NameAt(Get(v[i], "source"), Child(item, "source")));
        r.where = At(item);
        s->replicas.push_back(std::move(r));
      }
    } else if (key == "x-converge-sagas") {
      if (!v.IsSequence()) return Error(v, at, "must be a list");
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string item = Child(at, std::to_string(i));
        CONVERGE_RETURN_IF_ERROR(
            CheckKeys(v[i], item, {"name", "role", "participants", "description"}));
        SagaRole r;
        CONVERGE_ASSIGN_OR_RETURN(r.saga, NameAt(Get(v[i], "name"), Child(item, "name")));
        CONVERGE_ASSIGN_OR_RETURN(std::string role, String(Get(v[i], "role"), Child(item, "role")));
        if (role != "orchestrator" && role != "participant") {
          return Error(Get(v[i], "role"), Child(item, "role"),
                       "must be 'orchestrator' or 'participant'");
        }
        r.orchestrator = role == "orchestrator";
        if (!r.orchestrator && Get(v[i], "participants")) {
          return Error(Get(v[i], "participants"), Child(item, "participants"),
                       "only the orchestrator lists the participants");
        }
        CONVERGE_ASSIGN_OR_RETURN(r.participants,
                                  Names(Get(v[i], "participants"), Child(item, "participants")));
        r.where = At(item);
        s->sagas.push_back(std::move(r));
      }
    } else if (key.rfind("x-converge", 0) == 0) {
      return Error(kv.first, at, "unknown converge extension (docs/topology.md lists them)");
    }
  }
  return Status::Ok();
}

Result<Service> Parser::Run() {
  if (!root_.IsMap())
    return Error(root_, "", "a manifest must be a mapping (an AsyncAPI document)");
  const Y version = Get(root_, "asyncapi");
  CONVERGE_ASSIGN_OR_RETURN(std::string v, String(version, "/asyncapi"));
  if (v.rfind("3.", 0) != 0) {
    return Error(version, "/asyncapi", "AsyncAPI '" + v + "' is not supported (3.x only)");
  }
  Service s;
  s.file = file_;
  const Y info = Get(root_, "info");
  if (!info || !info.IsMap())
    return Error(info ? info : root_, "/info", "must be a mapping with a title");
  if (const Y name = Get(info, "x-converge-service"); name) {
    CONVERGE_ASSIGN_OR_RETURN(s.name, NameAt(name, "/info/x-converge-service"));
  } else {
    CONVERGE_ASSIGN_OR_RETURN(s.name, NameAt(Get(info, "title"), "/info/title"));
  }
  CONVERGE_RETURN_IF_ERROR(ParseChannels());
  std::map<std::string, size_t> send_by_id;
  std::vector<std::pair<Y, std::string>> publishes;  // (list, pointer) per receive
  if (const Y ops = Get(root_, "operations"); ops && !ops.IsNull()) {
    CONVERGE_RETURN_IF_ERROR(CheckMap(ops, "/operations"));
    for (const auto& kv : ops) {
      const std::string id = kv.first.Scalar();
      bool send = false;
      CONVERGE_ASSIGN_OR_RETURN(Operation o,
                                ParseOperation(id, kv.second, Child("/operations", id), &send));
      const Y pub = kv.second.IsMap() ? Get(kv.second, "x-converge-publishes") : Y();
      if (send) {
        if (pub) {
          return Error(pub, Child(Child("/operations", id), "x-converge-publishes"),
                       "only a receive operation's handler publishes");
        }
        send_by_id[id] = s.sends.size();
        s.sends.push_back(std::move(o));
      } else {
        publishes.emplace_back(pub, Child(Child("/operations", id), "x-converge-publishes"));
        s.receives.push_back(std::move(o));
      }
    }
  }
  // x-converge-publishes: each a $ref to a send operation, or to a channel this service sends
  // on (read after every operation is known).
  for (size_t r = 0; r < s.receives.size(); ++r) {
    const auto& [list, at] = publishes[r];
    if (!list || list.IsNull()) continue;
    if (!list.IsSequence()) return Error(list, at, "must be a list of $refs");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string item = Child(at, std::to_string(i));
      if (!list[i].IsMap() || !Get(list[i], "$ref")) return Error(list[i], item, "must be a $ref");
      std::string target;
      CONVERGE_ASSIGN_OR_RETURN(Y n, Resolve(Get(list[i], "$ref"), Child(item, "$ref"), &target));
      (void)n;
      std::string topic;
      for (const Operation& o : s.sends) {
        if (target == Child("/operations", o.id) || target == Child("/channels", o.channel)) {
          topic = o.topic;
        }
      }
      if (topic.empty()) {
        return Error(list[i], item,
                     "must name a send operation of this service, or a channel it sends on");
      }
      s.receives[r].publishes.push_back(topic);
    }
  }
  CONVERGE_RETURN_IF_ERROR(ParseExtensions(&s));
  return s;
}

}  // namespace

Result<Service> ParseManifest(std::string_view text, const std::string& file) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<YamlTree> tree, YamlTree::Parse(text, file));
  Parser p(file, tree->root());
  return p.Run();
}

Result<std::vector<Service>> LoadManifests(FileSystem& fs, const std::string& dir,
                                           const RunAll& run_all) {
  Result<std::vector<std::string>> names = fs.ListDir(dir);
  if (!names.ok()) {
    return InvalidArgumentError(dir + ": not a readable directory (" +
                                std::string(names.status().message()) + ")");
  }
  std::vector<std::string> files;  // names, sorted by ListDir
  for (const std::string& name : *names) {
    const size_t dot = name.rfind('.');
    const std::string ext = dot == std::string::npos ? "" : name.substr(dot);
    if (ext == ".yaml" || ext == ".yml" || ext == ".json") files.push_back(name);
  }
  if (files.empty()) return InvalidArgumentError(dir + ": no manifests (*.yaml, *.yml, *.json)");
  // Each task reads and parses one file into its own slot; the results are used in file order,
  // so the outcome (and the first error reported) does not depend on how the tasks ran.
  std::vector<std::optional<Result<Service>>> parsed(files.size());
  auto task = [&](size_t i) {
    Result<std::string> text = fs.ReadFileToString(dir + "/" + files[i]);
    if (!text.ok()) {
      parsed[i].emplace(InvalidArgumentError(files[i] + ": cannot read (" +
                                             std::string(text.status().message()) + ")"));
    } else {
      parsed[i].emplace(ParseManifest(*text, files[i]));
    }
  };
  if (run_all) {
    run_all(files.size(), task);
  } else {
    for (size_t i = 0; i < files.size(); ++i) task(i);
  }
  std::vector<Service> out;
  out.reserve(files.size());
  std::map<std::string, std::string> file_of;
  for (std::optional<Result<Service>>& r : parsed) {
    if (!r->ok()) return r->status();
    Service& s = **r;
    auto [it, inserted] = file_of.emplace(s.name, s.file);
    if (!inserted) {
      return InvalidArgumentError(s.file + ": service '" + s.name + "' is already declared by " +
                                  it->second);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace converge::topology
