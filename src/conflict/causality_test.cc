#include "converge/conflict/causality.h"

#include <gtest/gtest.h>

namespace converge::conflict {
namespace {

TEST(VersionVectorTest, Placeholder) { EXPECT_TRUE(VersionVector().empty()); }

}  // namespace
}  // namespace converge::conflict
