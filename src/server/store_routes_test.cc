// Tests of the store's routes (StoreRoutes), called directly with requests routed and read by
// the server's router (Api::MatchRoute, DecodeTarget) as the server does.
#include "server/store_routes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "converge/sim_env.h"
#include "converge/store.h"
#include "server/api.h"
#include "store/testing/memory_log.h"

namespace converge::server {
namespace {

using ::testing::HasSubstr;
namespace json = boost::json;

// A reply as a client sees it.
struct Reply {
  int status = 0;
  std::string body;
  HttpResponse res;
};

Reply ToReply(HttpResponse res) {
  const int status = static_cast<int>(res.result_int());
  std::string body = res.body();
  return Reply{status, std::move(body), std::move(res)};
}

class StoreHttpTest : public ::testing::Test {
 protected:
  StoreHttpTest() : env_(7) {
    StoreOptions o;
    o.dir = "/data/store";
    o.feed_log = &log_;
    o.max_document_bytes = 4096;
    o.ttl_sweep_interval_ms = 0;
    auto s = Store::Open(env_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    handler_ = std::make_unique<StoreRoutes>(*store_);
  }

  Reply Call(std::string_view method, std::string_view target, std::string_view body = {},
             std::string service = "orders", std::map<std::string, std::string> headers = {}) {
    const std::string_view path = target.substr(0, target.find('?'));
    Api::Match m = Api::MatchRoute(http::string_to_verb(method), path);
    if (m.route == nullptr) {
      HttpResponse res{m.allow.empty() ? http::status::not_found : http::status::method_not_allowed,
                       11};
      if (!m.allow.empty()) res.set(http::field::allow, m.allow);
      return ToReply(std::move(res));
    }
    Result<DecodedTarget> decoded = DecodeTarget(target, m.params);
    if (!decoded.ok()) return ToReply(ErrorReply(decoded.status()));
    StoreRequest r;
    r.route = m.route->id;
    for (auto& [name, value] : decoded->params) (name == "key" ? r.key : r.collection) = value;
    r.query = std::move(decoded->query);
    r.body = body;
    r.caller = Caller::Service(std::move(service));
    if (headers.count("If-Match")) r.if_match = headers["If-Match"];
    if (headers.count("If-None-Match")) r.if_none_match = headers["If-None-Match"];
    if (headers.count("Converge-TTL-Ms")) r.ttl_ms = headers["Converge-TTL-Ms"];
    if (headers.count("Content-Type")) r.content_type = headers["Content-Type"];
    return ToReply(handler_->Handle(r));
  }

  static std::string Header(const Reply& r, std::string_view name) {
    return std::string(r.res[boost::beast::string_view(name.data(), name.size())]);
  }
  static std::string Code(const Reply& r) {
    json::value v = json::parse(r.body);
    return std::string(v.at("code").as_string());
  }

  void CreateOrders() {
    auto r = Call("PUT", "/v1/collections/orders", R"({"writers":["billing"]})");
    ASSERT_EQ(r.status, 201) << r.body;
  }

  sim::SimEnv env_;
  store_testing::MemoryLog log_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<StoreRoutes> handler_;
};

TEST_F(StoreHttpTest, Routing) {
  EXPECT_EQ(Call("GET", "/v1/collections").status, 200);
  // The query is read after routing, and strictly: the list takes no parameters.
  EXPECT_EQ(Call("GET", "/v1/collections?limit=1").status, 400);
  EXPECT_EQ(Call("GET", "/v1/collectionsx").status, 404);
  EXPECT_EQ(Call("POST", "/v1/collections").status, 405);
  EXPECT_EQ(Call("POST", "/v1/collections/orders").status, 405);
  EXPECT_EQ(Call("GET", "/v1/collections/_transaction").status, 405);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/other").status, 404);
  EXPECT_EQ(Header(Call("PATCH", "/v1/collections/orders/docs/k"), "Allow"), "GET, PUT, DELETE");
}

TEST_F(StoreHttpTest, CollectionLifecycleAndOwnership) {
  CreateOrders();
  auto again = Call("PUT", "/v1/collections/orders", R"({"writers":["billing","ops"]})");
  EXPECT_EQ(again.status, 200) << again.body;
  auto stolen = Call("PUT", "/v1/collections/orders", R"({"owner":"billing"})", "billing");
  EXPECT_EQ(stolen.status, 403);
  EXPECT_EQ(Code(stolen), "PERMISSION_DENIED");
  auto other_owner = Call("PUT", "/v1/collections/theirs", R"({"owner":"billing"})", "orders");
  EXPECT_EQ(other_owner.status, 403);

  auto get = Call("GET", "/v1/collections/orders");
  ASSERT_EQ(get.status, 200);
  json::value v = json::parse(get.body);
  EXPECT_EQ(v.at("owner").as_string(), "orders");
  EXPECT_EQ(v.at("writers").as_array().size(), 2u);
  EXPECT_EQ(v.at("documents").to_number<uint64_t>(), 0u);
  EXPECT_EQ(json::parse(Call("GET", "/v1/collections").body).at("collections").as_array().size(),
            1u);

  EXPECT_EQ(Call("PUT", "/v1/collections/bad name").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/_x").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/x", "{").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/x", R"({"owners":"a"})").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/x", R"({"writers":"a"})").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/x", R"({"default_ttl_ms":"a"})").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/collections/x", R"({"merge_fields":{"f":"nope"}})").status, 400);
  EXPECT_EQ(
      Call("PUT", "/v1/collections/x", "{}", "orders", {{"Content-Type", "text/plain"}}).status,
      415);

  EXPECT_EQ(Call("DELETE", "/v1/collections/orders", "", "billing").status, 403);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders").status, 204);
  EXPECT_EQ(Call("GET", "/v1/collections/orders").status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders").status, 404);
}

TEST_F(StoreHttpTest, DocumentsWithETagsAndPreconditions) {
  CreateOrders();
  auto created = Call("PUT", "/v1/collections/orders/docs/o%2F1", R"({"total":5})", "orders",
                      {{"If-None-Match", "*"}, {"Content-Type", "application/json"}});
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string etag = Header(created, "ETag");
  EXPECT_EQ(etag, "\"" + Header(created, "Converge-Version") + "\"");
  EXPECT_EQ(json::parse(created.body).at("created").as_bool(), true);

  auto got = Call("GET", "/v1/collections/orders/docs/o/1");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.body, R"({"total":5})");
  EXPECT_EQ(Header(got, "ETag"), etag);
  EXPECT_EQ(Header(got, "Content-Type"), "application/json");

  auto updated = Call("PUT", "/v1/collections/orders/docs/o/1", R"({"total":6})", "billing",
                      {{"If-Match", etag}});
  ASSERT_EQ(updated.status, 200) << updated.body;
  auto stale = Call("PUT", "/v1/collections/orders/docs/o/1", R"({"total":7})", "billing",
                    {{"If-Match", etag}});
  EXPECT_EQ(stale.status, 412);
  EXPECT_EQ(Code(stale), "ABORTED");
  auto exists =
      Call("PUT", "/v1/collections/orders/docs/o/1", "1", "orders", {{"If-None-Match", "*"}});
  EXPECT_EQ(exists.status, 412);
  EXPECT_EQ(Code(exists), "ALREADY_EXISTS");
  EXPECT_EQ(
      Call("PUT", "/v1/collections/orders/docs/o/1", "1", "orders", {{"If-Match", "abc"}}).status,
      400);
  EXPECT_EQ(Call("PUT", "/v1/collections/orders/docs/o/1", "1", "orders", {{"If-None-Match", etag}})
                .status,
            400);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o/1").body, R"({"total":6})");

  auto denied = Call("PUT", "/v1/collections/orders/docs/o/1", "1", "stranger");
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders/docs/o/1", "", "stranger").status, 403);
  EXPECT_EQ(
      Call("DELETE", "/v1/collections/orders/docs/o/1", "", "orders", {{"If-Match", etag}}).status,
      412);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders/docs/o/1").status, 204);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/o/1").status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/collections/orders/docs/o/1").status, 404);
  EXPECT_EQ(Call("GET", "/v1/collections/nosuch/docs/k").status, 404);
}

TEST_F(StoreHttpTest, MalformedKeysAndBodiesAre400OversizedIs413) {
  CreateOrders();
  EXPECT_EQ(Call("PUT", "/v1/collections/orders/docs/", "1").status, 405);
  for (const char* target :
       {"/v1/collections/orders/docs/a%20b", "/v1/collections/orders/docs/a%zz",
        "/v1/collections/orders/docs/a%2", "/v1/collections/orders/docs/%22q%22",
        "/v1/collections/orders/docs/caf%C3%A9", "/v1/collections/orders/docs/a%00b"}) {
    auto r = Call("PUT", target, "1");
    EXPECT_EQ(r.status, 400) << target << " " << r.body;
    EXPECT_EQ(Call("GET", target).status, 400) << target;
  }
  const std::string long_key = "/v1/collections/orders/docs/" + std::string(600, 'k');
  EXPECT_EQ(Call("PUT", long_key, "1").status, 400);
  for (const char* body : {"", "{", "{\"a\":}", "nul", "1 2", "[1,]", "\"unterminated"}) {
    auto r = Call("PUT", "/v1/collections/orders/docs/k", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(Code(r), "INVALID_ARGUMENT");
  }
  auto big = Call("PUT", "/v1/collections/orders/docs/k", "\"" + std::string(5000, 'x') + "\"");
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(Code(big), "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(Call("PUT", "/v1/collections/orders/docs/k", "1", "orders",
                 {{"Content-Type", "application/xml"}})
                .status,
            415);
  EXPECT_EQ(Call("PUT", "/v1/collections/orders/docs/k", "1", "orders",
                 {{"Content-Type", "application/vnd.x+json; charset=utf-8"}})
                .status,
            201);
  EXPECT_EQ(
      Call("PUT", "/v1/collections/orders/docs/k", "1", "orders", {{"Converge-TTL-Ms", "soon"}})
          .status,
      400);
  EXPECT_EQ(Call("PUT", "/v1/collections/orders/docs/k?ttl_ms=-1", "1").status, 400);
}

TEST_F(StoreHttpTest, TtlHeaderAndQuery) {
  CreateOrders();
  ASSERT_EQ(
      Call("PUT", "/v1/collections/orders/docs/a", "1", "orders", {{"Converge-TTL-Ms", "1000"}})
          .status,
      201);
  ASSERT_EQ(Call("PUT", "/v1/collections/orders/docs/b?ttl_ms=3000", "1").status, 201);
  EXPECT_FALSE(
      Header(Call("GET", "/v1/collections/orders/docs/a"), "Converge-Expires-At-Ms").empty());
  env_.AdvanceTime(2000 * 1'000'000LL);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/a").status, 404);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/b").status, 200);
}

TEST_F(StoreHttpTest, RangeReadsWithPagination) {
  CreateOrders();
  for (const char* k : {"a/1", "a/2", "a/3", "b/1"}) {
    ASSERT_EQ(Call("PUT", std::string("/v1/collections/orders/docs/") + k, "{\"k\":1}").status,
              201);
  }
  auto page1 = Call("GET", "/v1/collections/orders/docs?prefix=a%2F&limit=2");
  ASSERT_EQ(page1.status, 200) << page1.body;
  json::value v = json::parse(page1.body);
  ASSERT_EQ(v.at("documents").as_array().size(), 2u);
  EXPECT_EQ(v.at("documents").as_array()[0].at("key").as_string(), "a/1");
  EXPECT_EQ(v.at("documents").as_array()[0].at("value").at("k").as_int64(), 1);
  const std::string token(v.at("next_page_token").as_string());
  EXPECT_EQ(token, "a/2");
  auto page2 = Call("GET", "/v1/collections/orders/docs?prefix=a/&limit=2&page_token=" + token);
  json::value v2 = json::parse(page2.body);
  ASSERT_EQ(v2.at("documents").as_array().size(), 1u);
  EXPECT_EQ(v2.at("documents").as_array()[0].at("key").as_string(), "a/3");
  EXPECT_EQ(v2.at("next_page_token").as_string(), "");
  auto range = Call("GET", "/v1/collections/orders/docs?start_key=a/2&end_key=b/1");
  EXPECT_EQ(json::parse(range.body).at("documents").as_array().size(), 2u);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs?limit=0").status, 400);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs?limit=x").status, 400);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs?limit=100000").status, 400);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs?start_key=a%20").status, 400);
  EXPECT_EQ(Call("GET", "/v1/collections/nosuch/docs").status, 404);
}

TEST_F(StoreHttpTest, Transactions) {
  CreateOrders();
  auto a = Call("PUT", "/v1/collections/orders/docs/a", "1");
  const std::string etag = Header(a, "ETag");
  std::string body = R"({"ops":[
      {"op":"put","collection":"orders","key":"a","value":{"n":2},"if_match":)" +
                     json::serialize(json::string(etag)) + R"(},
      {"op":"put","collection":"orders","key":"b","value":[1,2],"if_none_match":"*"},
      {"op":"check","collection":"orders","key":"c","if_none_match":"*"}]})";
  auto ok = Call("POST", "/v1/collections/_transaction", body);
  ASSERT_EQ(ok.status, 200) << ok.body;
  json::value v = json::parse(ok.body);
  const uint64_t seq = v.at("commit_seq").to_number<uint64_t>();
  EXPECT_EQ(v.at("results").as_array()[0].at("version").to_number<uint64_t>(), seq);
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/a").body, R"({"n":2})");
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/b").body, "[1,2]");

  // Replaying it fails on the first op: nothing changes.
  auto again = Call("POST", "/v1/collections/_transaction", body);
  EXPECT_EQ(again.status, 412);
  EXPECT_THAT(again.body, HasSubstr("op 0"));
  auto denied = Call("POST", "/v1/collections/_transaction",
                     R"({"ops":[{"op":"delete","collection":"orders","key":"a"}]})", "stranger");
  EXPECT_EQ(denied.status, 403);
  for (const char* bad :
       {"", "[]", R"({"ops":{}})", R"({"ops":[1]})", R"({"ops":[{"op":"put"}]})",
        R"({"ops":[{"op":"zap","collection":"orders","key":"a"}]})",
        R"({"ops":[{"op":"put","collection":"orders","key":"a"}]})",
        R"({"ops":[{"op":"put","collection":"orders","key":"a b","value":1}]})",
        R"({"ops":[{"op":"check","collection":"orders","key":"a"}]})", R"({"ops":[]})"}) {
    EXPECT_EQ(Call("POST", "/v1/collections/_transaction", bad).status, 400) << bad;
  }
  EXPECT_EQ(Call("GET", "/v1/collections/orders/docs/a").body, R"({"n":2})");
}

TEST(StoreHttpInlineTest, ReadsAndWritesInlineOnlyWhenNothingBlocks) {
  sim::SimEnv env(3);
  std::vector<std::function<void()>> tasks;
  StoreOptions o;
  o.dir = "/data/store";
  o.ttl_sweep_interval_ms = 0;
  o.background = [&tasks](std::function<void()> t) { tasks.push_back(std::move(t)); };
  auto opened = Store::Open(env, o);
  ASSERT_TRUE(opened.ok());
  std::unique_ptr<Store> store = std::move(*opened);
  CollectionConfig config;
  config.owner = "orders";
  ASSERT_TRUE(store->CreateCollection(Caller::Service("orders"), "c", config).ok());
  auto run_tasks = [&tasks] {
    while (!tasks.empty()) {
      auto t = std::move(tasks.front());
      tasks.erase(tasks.begin());
      t();
    }
  };
  StoreRequest r;
  r.caller = Caller::Service("orders");
  std::optional<HttpResponse> got;
  StoreRoutes::Done done = [&got](HttpResponse resp) { got = std::move(resp); };

  // Without inline writes, a PUT is not taken; with them it is, and answers once synced.
  StoreRoutes blocking(*store);
  r.route = RouteId::kPutDocument;
  r.collection = "c";
  r.key = "k";
  r.body = "1";
  EXPECT_FALSE(blocking.TryHandleInline(r, done));
  ASSERT_TRUE(done) << "left untouched";
  StoreRoutesOptions options;
  options.inline_writes = true;
  StoreRoutes handler(*store, options);
  ASSERT_TRUE(handler.TryHandleInline(r, done));
  EXPECT_FALSE(got.has_value()) << "not durable yet";

  // A read of the not yet durable document is not taken inline without inline writes (it
  // would block); with them it is, and answered once the write is durable.
  std::optional<HttpResponse> read;
  StoreRoutes::Done read_done = [&read](HttpResponse resp) { read = std::move(resp); };
  r.route = RouteId::kGetDocument;
  r.body = {};
  EXPECT_FALSE(blocking.TryHandleInline(r, read_done));
  EXPECT_FALSE(blocking.TryRead(r).has_value());
  EXPECT_FALSE(handler.TryRead(r).has_value());
  ASSERT_TRUE(handler.TryHandleInline(r, read_done));
  EXPECT_FALSE(read.has_value()) << "not durable yet";
  run_tasks();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->result_int(), 201u);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->result_int(), 200u);
  EXPECT_EQ(read->body(), "1");
  got.reset();
  // Once durable, reads are answered at once. Collection routes are never taken.
  read_done = [&got](HttpResponse resp) { got = std::move(resp); };
  ASSERT_TRUE(handler.TryHandleInline(r, read_done));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->result_int(), 200u);
  EXPECT_EQ(got->body(), "1");
  r.route = RouteId::kGetCollection;
  StoreRoutes::Done other = [](HttpResponse) {};
  EXPECT_FALSE(handler.TryHandleInline(r, other));
  r.route = RouteId::kListDocuments;
  EXPECT_FALSE(handler.TryHandleInline(r, other));
}

}  // namespace
}  // namespace converge::server
