// The pgoutput decoder on hand-built byte strings: every message kind converge reads, and
// malformed or truncated input (every prefix of every message) giving a clear error.
#include "cdc/pgoutput.h"

#include <gtest/gtest.h>

#include "cdc/test_bytes.h"

namespace converge::cdc {
namespace {

using testing::Bytes;

TEST(LsnTest, FormatAndParse) {
  EXPECT_EQ(FormatLsn(0x16B374D848ull), "16/B374D848");
  EXPECT_EQ(FormatLsn(0), "0/0");
  EXPECT_EQ(*ParseLsn("16/B374D848"), 0x16B374D848ull);
  EXPECT_EQ(*ParseLsn("0/0"), 0u);
  for (const char* bad : {"", "/", "1/", "/1", "x/1", "123456789/1", "1-2"}) {
    EXPECT_EQ(ParseLsn(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(StreamMessageTest, XLogDataAndKeepalive) {
  const std::string bytes = testing::XLog(0x10, "payload", 0x20);
  auto x = DecodeStreamMessage(bytes);  // the payload is a view into `bytes`
  ASSERT_TRUE(x.ok()) << x.status().ToString();
  EXPECT_EQ(x->kind, StreamMessage::Kind::kXLogData);
  EXPECT_EQ(x->start, 0x10u);
  EXPECT_EQ(x->wal_end, 0x20u);
  EXPECT_EQ(x->payload, "payload");

  auto k = DecodeStreamMessage(testing::Keepalive(0x30, true));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(k->kind, StreamMessage::Kind::kKeepalive);
  EXPECT_EQ(k->wal_end, 0x30u);
  EXPECT_TRUE(k->reply_requested);
}

TEST(StreamMessageTest, MalformedIsDataLoss) {
  EXPECT_EQ(DecodeStreamMessage("").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(DecodeStreamMessage("z").status().code(), StatusCode::kDataLoss);
  const std::string k = testing::Keepalive(1, false);
  for (size_t n = 0; n < k.size(); ++n) {
    EXPECT_EQ(DecodeStreamMessage(k.substr(0, n)).status().code(), StatusCode::kDataLoss) << n;
  }
  EXPECT_EQ(DecodeStreamMessage(k + "x").status().code(), StatusCode::kDataLoss);
  const std::string w = testing::XLog(1, "");
  for (size_t n = 0; n < w.size(); ++n) {
    EXPECT_EQ(DecodeStreamMessage(w.substr(0, n)).status().code(), StatusCode::kDataLoss) << n;
  }
}

TEST(StreamMessageTest, StandbyStatusLayout) {
  const std::string s = EncodeStandbyStatus(0x0102030405060708ull, 2, 3, 4, true);
  ASSERT_EQ(s.size(), 34u);
  EXPECT_EQ(s[0], 'r');
  EXPECT_EQ(s.substr(1, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  EXPECT_EQ(s[16], 2);
  EXPECT_EQ(s[24], 3);
  EXPECT_EQ(s[32], 4);
  EXPECT_EQ(s[33], 1);
}

TEST(PgOutputTest, BeginCommitMessage) {
  auto b = DecodePgOutput(testing::BeginMsg(0x100, 777, 42));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->tag, 'B');
  EXPECT_EQ(b->begin.final_lsn, 0x100u);
  EXPECT_EQ(b->begin.commit_time_pg, 777);
  EXPECT_EQ(b->begin.xid, 42u);

  auto c = DecodePgOutput(testing::CommitMsg(0x100, 0x128, 777));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->commit.commit_lsn, 0x100u);
  EXPECT_EQ(c->commit.end_lsn, 0x128u);

  const std::string bytes = testing::MessageMsg(true, 0xF0, "converge:orders", "{\"a\":1}");
  auto m = DecodePgOutput(bytes);  // views into `bytes`
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->message.transactional);
  EXPECT_EQ(m->message.lsn, 0xF0u);
  EXPECT_EQ(m->message.prefix, "converge:orders");
  EXPECT_EQ(m->message.content, "{\"a\":1}");

  // Content may hold NUL bytes: its length, not a terminator, bounds it.
  const std::string nul = testing::MessageMsg(false, 1, "p", std::string("a\0b", 3));
  auto z = DecodePgOutput(nul);
  ASSERT_TRUE(z.ok());
  EXPECT_FALSE(z->message.transactional);
  EXPECT_EQ(z->message.content.size(), 3u);
}

std::string RelationMsg() {
  return Bytes()
      .U8('R')
      .U32(16384)
      .Str("public")
      .Str("orders")
      .U8('d')
      .U16(2)
      .U8(1)
      .Str("id")
      .U32(23)
      .U32(0xFFFFFFFF)
      .U8(0)
      .Str("note")
      .U32(25)
      .U32(0xFFFFFFFF)
      .str();
}

TEST(PgOutputTest, RelationAndChanges) {
  auto r = DecodePgOutput(RelationMsg());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->relation.id, 16384u);
  EXPECT_EQ(r->relation.schema, "public");
  EXPECT_EQ(r->relation.name, "orders");
  ASSERT_EQ(r->relation.columns.size(), 2u);
  EXPECT_TRUE(r->relation.columns[0].key);
  EXPECT_EQ(r->relation.columns[0].type_oid, 23u);
  EXPECT_EQ(r->relation.columns[0].type_modifier, -1);
  EXPECT_FALSE(r->relation.columns[1].key);

  const std::string insert =
      Bytes().U8('I').U32(16384).U8('N').U16(2).U8('t').U32(1).Raw("7").U8('n').str();
  auto i = DecodePgOutput(insert);
  ASSERT_TRUE(i.ok()) << i.status().ToString();
  EXPECT_EQ(i->change.op, 'I');
  ASSERT_EQ(i->change.new_tuple.size(), 2u);
  EXPECT_EQ(i->change.new_tuple[0].data, "7");
  EXPECT_EQ(i->change.new_tuple[1].kind, 'n');

  const std::string update = Bytes()
                                 .U8('U')
                                 .U32(16384)
                                 .U8('K')
                                 .U16(1)
                                 .U8('t')
                                 .U32(1)
                                 .Raw("6")
                                 .U8('N')
                                 .U16(2)
                                 .U8('t')
                                 .U32(1)
                                 .Raw("7")
                                 .U8('u')
                                 .str();
  auto u = DecodePgOutput(update);
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->change.old_kind, 'K');
  EXPECT_EQ(u->change.old_tuple[0].data, "6");
  EXPECT_EQ(u->change.new_tuple[1].kind, 'u');

  const std::string del = Bytes().U8('D').U32(16384).U8('K').U16(1).U8('t').U32(1).Raw("7").str();
  auto d = DecodePgOutput(del);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->change.op, 'D');
  EXPECT_EQ(d->change.old_tuple[0].data, "7");

  // Every strict prefix of every message is a clear DataLoss, never a crash or a read past
  // the end (ASan runs this too).
  for (const std::string& msg :
       {RelationMsg(), insert, update, del, testing::BeginMsg(1, 2, 3), testing::CommitMsg(1, 2, 3),
        testing::MessageMsg(true, 1, "converge:t", "body")}) {
    for (size_t n = 0; n < msg.size(); ++n) {
      auto bad = DecodePgOutput(msg.substr(0, n));
      ASSERT_FALSE(bad.ok()) << "prefix " << n << " of tag " << msg[0];
      EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
      EXPECT_NE(bad.status().message().find("pgoutput"), std::string_view::npos);
    }
    EXPECT_EQ(DecodePgOutput(msg + "x").status().code(), StatusCode::kDataLoss) << msg[0];
  }
}

TEST(PgOutputTest, MalformedShapes) {
  // Unknown tag (e.g. a streamed-transaction message converge did not ask for).
  EXPECT_EQ(DecodePgOutput("S").status().code(), StatusCode::kDataLoss);
  // Unknown tuple kind.
  auto k = DecodePgOutput(Bytes().U8('I').U32(1).U8('N').U16(1).U8('x').str());
  EXPECT_EQ(k.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(k.status().message().find("unknown kind"), std::string_view::npos);
  // A value length past the end.
  EXPECT_EQ(DecodePgOutput(Bytes().U8('I').U32(1).U8('N').U16(1).U8('t').U32(0xFFFFFFFF).str())
                .status()
                .code(),
            StatusCode::kDataLoss);
  // A delete without a key, an insert with an old tuple.
  EXPECT_EQ(DecodePgOutput(Bytes().U8('D').U32(1).U8('N').U16(0).str()).status().code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(DecodePgOutput(Bytes().U8('I').U32(1).U8('K').U16(0).str()).status().code(),
            StatusCode::kDataLoss);
  // A commit whose end precedes it; a truncate whose count does not match.
  EXPECT_EQ(DecodePgOutput(testing::CommitMsg(10, 5, 0)).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(DecodePgOutput(Bytes().U8('T').U32(2).U8(0).U32(1).str()).status().code(),
            StatusCode::kDataLoss);
  // A message whose content length claims more than there is.
  EXPECT_EQ(DecodePgOutput(Bytes().U8('M').U8(1).U64(1).Str("p").U32(100).Raw("short").str())
                .status()
                .code(),
            StatusCode::kDataLoss);
  // Tags converge skips still have to be well-formed.
  EXPECT_TRUE(DecodePgOutput(Bytes().U8('O').U64(1).Str("origin").str()).ok());
  EXPECT_TRUE(DecodePgOutput(Bytes().U8('Y').U32(1).Str("s").Str("t").str()).ok());
  auto truncate = DecodePgOutput(Bytes().U8('T').U32(2).U8(3).U32(5).U32(9).str());
  ASSERT_TRUE(truncate.ok()) << truncate.status().ToString();
  EXPECT_EQ(truncate->truncate.relation_ids, (std::vector<uint32_t>{5, 9}));
  EXPECT_TRUE(truncate->truncate.cascade);
  EXPECT_TRUE(truncate->truncate.restart_identity);
}

}  // namespace
}  // namespace converge::cdc
