// Test helpers for the core module: a seeded Random, a manual Clock, and a generator of
// random valid CloudEvents covering every attribute, extension kind and data kind.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

#include "converge/env.h"
#include "converge/event.h"

namespace converge::testing {

// SplitMix64: small, fast, and good enough for tests.
class SeededRandom : public Random {
 public:
  explicit SeededRandom(uint64_t seed) : state_(seed) {}
  uint64_t Next64() override {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

class ManualClock : public Clock {
 public:
  int64_t NowMonotonicNanos() override { return mono_ns; }
  int64_t NowWallNanos() override { return wall_ns; }
  int64_t mono_ns = 1'000'000'000;
  int64_t wall_ns = 1'700'000'000'000'000'000;
};

// The seed for randomized tests: $CONVERGE_SIM_SEED if set, else `fallback`. Tests print
// it in their failure messages so a failure can be replayed.
inline uint64_t TestSeed(uint64_t fallback) {
  const char* env = std::getenv("CONVERGE_SIM_SEED");
  return env ? std::strtoull(env, nullptr, 0) : fallback;
}

// Random valid events.
class EventGenerator {
 public:
  explicit EventGenerator(Random& random) : r_(random) {}

  Event Next() {
    Event e;
    e.set_id(Text(1, 40, /*ascii_only=*/Coin(0.7)));
    e.set_source(Source());
    e.set_type(
        Pick({"com.example.order.created", "t", "io.converge.test.v1", "com.example.someevent"}) +
        (Coin(0.3) ? Text(1, 10, true) : ""));
    if (Coin(0.3)) e.set_subject(Text(1, 30, Coin(0.5)));
    if (Coin(0.6)) e.set_time(Time());
    if (Coin(0.2)) {
      std::string schema = "https://schemas.example.com/";
      e.set_dataschema(schema.append(Token(1, 12)).append(".json"));
    }
    const int n_ext = static_cast<int>(r_.Uniform(5));
    for (int i = 0; i < n_ext; ++i) AddExtension(e);
    // datacontenttype and data, consistent with each other.
    switch (r_.Uniform(8)) {
      case 0:
        break;  // no data, no content type
      case 1:
      case 2:  // JSON data, implicit content type
        SetJson(e);
        break;
      case 3:  // JSON data, explicit JSON content type
        e.set_datacontenttype(Pick({"application/json", "application/vnd.example+json",
                                    "text/json; charset=utf-8", "Application/JSON"}));
        SetJson(e);
        break;
      case 4:
      case 5:  // text data
        e.set_datacontenttype(Pick({"text/plain", "application/xml", "text/csv; charset=utf-8"}));
        if (!e.SetTextData(Text(0, 200, Coin(0.5))).ok()) std::abort();
        break;
      default:  // binary data, any or no content type
        if (Coin(0.7)) {
          e.set_datacontenttype(
              Pick({"application/octet-stream", "application/json", "image/png"}));
        }
        e.SetBinaryData(Bytes(0, 300));
        break;
    }
    return e;
  }

  // A random JSON value of nesting at most `depth`, with irregular whitespace.
  std::string Json(int depth) {
    switch (r_.Uniform(depth > 0 ? 8 : 5)) {
      case 0:
        return Pick({"null", "true", "false"});
      case 1:
        return Number();
      case 2:
        return Number();
      case 3:
      case 4:
        return Quoted(Text(0, 20, Coin(0.5)));
      case 5:
      case 6: {
        std::string out = "{";
        const int n = static_cast<int>(r_.Uniform(4));
        for (int i = 0; i < n; ++i) {
          if (i) out += Coin(0.5) ? "," : " ,\n";
          out += Quoted(Text(0, 8, Coin(0.5)) + std::to_string(i)) + (Coin(0.5) ? ":" : " : ");
          out += Json(depth - 1);
        }
        return out + (Coin(0.5) ? "}" : " }");
      }
      default: {
        std::string out = Coin(0.5) ? "[" : "[ ";
        const int n = static_cast<int>(r_.Uniform(4));
        for (int i = 0; i < n; ++i) {
          if (i) out += ",";
          out += Json(depth - 1);
        }
        return out + "]";
      }
    }
  }

  // Text of [min, max] code points, valid in a CloudEvents String (no control characters).
  std::string Text(size_t min, size_t max, bool ascii_only) {
    const size_t n = min + r_.Uniform(max - min + 1);
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      if (ascii_only || Coin(0.7)) {
        out += static_cast<char>(0x20 + r_.Uniform(0x5F));  // ' ' .. '~', includes '"' '\\'
      } else {
        static const char* kWide[] = {"\xC3\xA9",     "\xE2\x82\xAC", "\xF0\x9F\x98\x80",
                                      "\xE4\xB8\xAD", "\xC2\xA0",     "\xE2\x80\xA8"};
        out += kWide[r_.Uniform(6)];
      }
    }
    return out;
  }

  std::string Bytes(size_t min, size_t max) {
    std::string out(min + r_.Uniform(max - min + 1), '\0');
    for (char& c : out) c = static_cast<char>(r_.Next64());
    return out;
  }

  bool Coin(double p) { return r_.Bernoulli(p); }

 private:
  std::string Pick(std::initializer_list<const char*> options) {
    return *(options.begin() + r_.Uniform(options.size()));
  }

  std::string Token(size_t min, size_t max) {
    static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string out(min + r_.Uniform(max - min + 1), 'a');
    for (char& c : out) c = kChars[r_.Uniform(36)];
    return out;
  }

  std::string Source() {
    // Built with append: GCC 12's -Wrestrict misfires on `"literal" + std::string` at -O3.
    std::string out;
    switch (r_.Uniform(5)) {
      case 0:
        out.append("/").append(Token(1, 10)).append("/").append(Token(0, 10));
        break;
      case 1:
        out.append("https://").append(Token(1, 10)).append(".example.com/");
        out.append(Token(0, 8)).append("?q=").append(Token(0, 4));
        break;
      case 2:
        out = "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66";
        break;
      case 3:
        out.append(Token(1, 10)).append("%20").append(Token(0, 3)).append("#frag");
        break;
      default:
        out.append("mailto:").append(Token(1, 8)).append("@example.com");
        break;
    }
    return out;
  }

  std::string Time() {
    const int64_t nanos = r_.UniformRange(-2'000'000'000'000'000'000, 4'000'000'000'000'000'000);
    switch (r_.Uniform(3)) {
      case 0:
        return FormatRfc3339(nanos);
      case 1:
        return FormatRfc3339(nanos - nanos % 1'000'000'000);
      default:
        return "2018-04-05T17:31:00.5+02:00";
    }
  }

  void AddExtension(Event& e) {
    std::string name = Pick({"partitionkey", "traceparent", "tracestate", "comexampleext1", "x",
                             "a1234567890123456789"});
    if (Coin(0.5)) name = Token(1, 20);
    if (name == "id" || name == "type" || name == "time" || name == "data" || name == "source" ||
        name == "subject") {
      name += "x";
    }
    switch (r_.Uniform(4)) {
      case 0:
        e.SetExtensionInteger(name, static_cast<int32_t>(r_.Next64()));
        break;
      case 1:
        e.SetExtensionBoolean(name, Coin(0.5));
        break;
      default:
        e.SetExtension(name, Text(0, 30, Coin(0.5)));
        break;
    }
  }

  void SetJson(Event& e) {
    if (!e.SetJsonData(Json(3)).ok()) std::abort();
  }

  std::string Number() {
    switch (r_.Uniform(6)) {
      case 0:
        return std::to_string(static_cast<int64_t>(r_.Next64()));
      case 1:
        return std::to_string(r_.Next64());
      case 2:
        return "123456789012345678901234567890";  // beyond 64 bits
      case 3:
        return "-0.5e-7";
      case 4:
        return "3.141592653589793238462643383279";
      default:
        return std::to_string(r_.Uniform(1000));
    }
  }

  static std::string Quoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  }

  Random& r_;
};

}  // namespace converge::testing
