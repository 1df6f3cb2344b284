#include "converge/status.h"

#include <gtest/gtest.h>

namespace converge {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd: " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  CONVERGE_ASSIGN_OR_RETURN(int h, Half(x));
  CONVERGE_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status CheckEven(int x) {
  CONVERGE_RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST(StatusTest, OkIsCheapAndEmpty) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, CarriesCodeAndMessage) {
  Status s = NotFoundError("topic 'orders' does not exist");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: topic 'orders' does not exist");
  Status copy = s;
  EXPECT_EQ(copy, s);
  EXPECT_EQ(s.WithContext("publish").message(), "publish: topic 'orders' does not exist");
}

// A full disk is told from the other ResourceExhausted errors by how the status was made, not
// by its text, and stays told through the context callers add.
TEST(StatusTest, StorageFullIsKeptByCopiesAndContext) {
  Status full = StorageFullError("write '/d/x': No space left on device");
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(full.storage_full());
  Status copy = full;
  EXPECT_TRUE(copy.storage_full());
  EXPECT_TRUE(full.WithContext("appending to 'orders'").storage_full());
  Status replaced = full.WithMessage("appends fail");
  EXPECT_TRUE(replaced.storage_full());
  EXPECT_EQ(replaced.message(), "appends fail");
  EXPECT_EQ(replaced.code(), StatusCode::kResourceExhausted);
  // The same text in another ResourceExhausted (a limit, a peer's message) is not a full disk.
  EXPECT_FALSE(ResourceExhaustedError("write '/d/x': No space left on device").storage_full());
  EXPECT_FALSE(Status::Ok().storage_full());
  EXPECT_TRUE(Status::Ok().WithMessage("x").ok());
}

TEST(StatusTest, ResultPropagates) {
  EXPECT_EQ(Quarter(8).value(), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "odd: 3");
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(6).value_or(-1), -1);
}

TEST(StatusDeathTest, ValueOfErrorCrashesLoudly) {
  Result<int> r = NotFoundError("nothing");
  EXPECT_DEATH((void)r.value(), "NOT_FOUND: nothing");
}

}  // namespace
}  // namespace converge
