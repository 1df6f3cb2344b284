#include <gtest/gtest.h>
TEST(SagaSimTest, Placeholder) {}
