// The validator against the official JSON-Schema-Test-Suite: every draft-04 case must give the
// suite's answer, except the cases listed in kSkips (and docs/schemas.md), which must still
// fail (a skip that starts passing is reported, so the list stays exact). Draft-06 and 07 are
// run for the record only: the validator implements draft-04, and Compile refuses what a
// later draft adds.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "schema/validator.h"

namespace converge::schema {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

// A case the validator answers differently from the suite: file (relative to the draft's
// folder), the group's description ("" every group), the test's description ("" every test
// of the group, "(invalid)" those the suite says are invalid).
struct Skip {
  const char* file;
  const char* group;
  const char* test;
  const char* why;
};

const std::vector<Skip> kDraft4Skips = {
#include "suite_skips_draft4.inc"
};

json::value ReadJson(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::vector<fs::path> SuiteFiles(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".json") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct Outcome {
  std::string file, group, test;
  bool valid;  // the suite's answer
  bool matched;
};

std::vector<Outcome> RunDraft(const std::string& draft) {
  fs::path dir = fs::path(CONVERGE_JSON_SCHEMA_TEST_SUITE) / "tests" / draft;
  std::vector<Outcome> out;
  for (const auto& file : SuiteFiles(dir)) {
    std::string rel = fs::relative(file, dir).string();
    json::value groups = ReadJson(file);
    for (const auto& g : groups.as_array()) {
      std::string gdesc(g.at("description").as_string());
      // What a registry does: schemas Compile refuses are mismatches (documented as skips).
      auto compiled = Validator::Compile(g.at("schema"));
      for (const auto& t : g.at("tests").as_array()) {
        std::string tdesc(t.at("description").as_string());
        bool want = t.at("valid").as_bool();
        // A refused schema validates nothing: each of its cases is a mismatch.
        bool matched = compiled.ok() && (*compiled)->Validate(t.at("data")).has_value() != want;
        out.push_back({rel, gdesc, tdesc, want, matched});
      }
    }
  }
  return out;
}

const Skip* FindSkip(const Outcome& o) {
  for (const auto& s : kDraft4Skips) {
    if (o.file == s.file && (*s.group == 0 || o.group == s.group) &&
        (*s.test == 0 || o.test == s.test ||
         (std::string_view(s.test) == "(invalid)" && !o.valid))) {
      return &s;
    }
  }
  return nullptr;
}

TEST(SchemaSuiteTest, Draft4MatchesExceptTheDocumentedSkips) {
  auto outcomes = RunDraft("draft4");
  ASSERT_GT(outcomes.size(), 300u) << "the suite was not found";
  std::map<const Skip*, int> skip_hits;
  int matched = 0;
  for (const auto& o : outcomes) {
    const Skip* skip = FindSkip(o);
    if (skip != nullptr) {
      ++skip_hits[skip];
      // A skipped case must still mismatch, or the skip (and the docs) say too much.
      EXPECT_FALSE(o.matched) << "skipped but now passes: " << o.file << " / " << o.group << " / "
                              << o.test;
      continue;
    }
    EXPECT_TRUE(o.matched) << "mismatch: " << o.file << " / " << o.group << " / " << o.test;
    matched += o.matched;
  }
  for (const auto& s : kDraft4Skips) {
    EXPECT_GT(skip_hits[&s], 0) << "skip matches no case: " << s.file << " / " << s.group;
  }
  std::cout << "draft4: " << outcomes.size() << " cases, " << matched << " match, "
            << outcomes.size() - matched << " skipped\n";
}

// Publish validates an event's data as text (ValidateText, and a Batch reusing one scratch
// state for many values); the suite above runs parsed values (Validate). Every draft-4
// instance must get the same verdict and the same failing paths both ways.
TEST(SchemaSuiteTest, Draft4TextAndValuePathsAgree) {
  fs::path dir = fs::path(CONVERGE_JSON_SCHEMA_TEST_SUITE) / "tests" / "draft4";
  int compared = 0;
  for (const auto& file : SuiteFiles(dir)) {
    json::value groups = ReadJson(file);
    for (const auto& g : groups.as_array()) {
      auto compiled = Validator::Compile(g.at("schema"));
      if (!compiled.ok()) continue;  // refused schemas validate nothing
      const Validator& v = **compiled;
      Validator::Batch batch(v);
      for (const auto& t : g.at("tests").as_array()) {
        const json::value& data = t.at("data");
        const std::string text = json::serialize(data);
        std::optional<Violation> by_value = v.Validate(data);
        for (const std::optional<Violation>& by_text :
             {v.ValidateText(text), batch.ValidateText(text)}) {
          std::string where = file.filename().string() + " / " +
                              std::string(g.at("description").as_string()) + " / " +
                              std::string(t.at("description").as_string()) + ": " + text;
          ASSERT_EQ(by_value.has_value(), by_text.has_value()) << where;
          if (by_value) {
            EXPECT_EQ(by_value->instance_path, by_text->instance_path) << where;
            EXPECT_EQ(by_value->keyword, by_text->keyword) << where;
            EXPECT_EQ(by_value->schema_path, by_text->schema_path) << where;
          }
        }
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 300);
}

// For the record (docs/schemas.md): how the draft-04 validator does on later drafts' suites.
// Not an assertion: Compile refuses those drafts' keywords.
TEST(SchemaSuiteTest, LaterDraftsForTheRecord) {
  for (const char* draft : {"draft6", "draft7"}) {
    auto outcomes = RunDraft(draft);
    std::map<std::string, std::pair<int, int>> per_file;
    for (const auto& o : outcomes) {
      auto& [total, bad] = per_file[o.file];
      ++total;
      bad += !o.matched;
    }
    int bad_total = 0;
    std::string files;
    for (const auto& [f, tb] : per_file) {
      if (tb.second == 0) continue;
      bad_total += tb.second;
      files += " " + f + "(" + std::to_string(tb.second) + "/" + std::to_string(tb.first) + ")";
    }
    std::cout << draft << ": " << outcomes.size() << " cases, " << bad_total
              << " mismatches:" << files << "\n";
  }
}

}  // namespace
}  // namespace converge::schema
