#include <gtest/gtest.h>

#include "core/npy.h"
#include "core/tensor.h"

namespace kiln {
namespace {

TEST(Tensor, CreateAndAccess) {
  Tensor t(DataType::kFloat, {2, 3});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
  t.set_double(4, 2.5);
  EXPECT_EQ(t.get_double(4), 2.5);
}

TEST(Tensor, AbsurdSizesAreErrors) {
  auto r = Tensor::create(DataType::kFloat, {int64_t{1} << 62});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("exceeds"), std::string::npos) << r.status().message();
  auto o = Tensor::create(DataType::kFloat, {int64_t{1} << 40, int64_t{1} << 40});
  ASSERT_FALSE(o.ok());
  auto n = Tensor::create(DataType::kFloat, {-1});
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("negative"), std::string::npos);
}

TEST(Tensor, ReshapeSharesCloneCopies) {
  Tensor t = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {4});
  Tensor r = t.reshaped({2, 2});
  Tensor c = t.clone();
  t.data<int64_t>()[0] = 9;
  EXPECT_EQ(r.data<int64_t>()[0], 9);
  EXPECT_EQ(c.data<int64_t>()[0], 1);
  EXPECT_EQ(r.dims(), (Dims{2, 2}));
}

TEST(Tensor, CopyElementsStrings) {
  Tensor s = Tensor::from_vector<std::string>({"a", "bb", "ccc"}, {3});
  Tensor d(DataType::kString, {2});
  copy_elements(d, 0, s, 1, 2);
  EXPECT_EQ(d.strings()[0], "bb");
  EXPECT_EQ(d.strings()[1], "ccc");
}

TEST(Npy, RoundTrip) {
  Tensor t = Tensor::from_vector<float>({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}, {2, 3});
  auto back = parse_npy(serialize_npy(t), "mem");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->dtype(), DataType::kFloat);
  EXPECT_EQ(back->dims(), (Dims{2, 3}));
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(back->data<float>()[i], t.data<float>()[i]);

  Tensor s = Tensor::from_vector<std::string>({"hello", "x"}, {2});
  auto sb = parse_npy(serialize_npy(s), "mem");
  ASSERT_TRUE(sb.ok()) << sb.status().message();
  EXPECT_EQ(sb->strings()[0], "hello");
  EXPECT_EQ(sb->strings()[1], "x");

  Tensor scalar = Tensor::scalar<int64_t>(42);
  auto scb = parse_npy(serialize_npy(scalar), "mem");
  ASSERT_TRUE(scb.ok());
  EXPECT_EQ(scb->rank(), 0);
  EXPECT_EQ(scb->data<int64_t>()[0], 42);
}

TEST(Npy, BadFilesAreErrors) {
  EXPECT_FALSE(parse_npy("", "empty.npy").ok());
  EXPECT_FALSE(parse_npy("not a numpy file at all", "junk.npy").ok());
  Tensor t = Tensor::from_vector<double>({1, 2, 3, 4}, {4});
  std::string bytes = serialize_npy(t);
  auto r = parse_npy(bytes.substr(0, bytes.size() - 5), "cut.npy");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("cut.npy"), std::string::npos);
  std::string fortran = bytes;
  auto pos = fortran.find("False");
  fortran.replace(pos, 5, "True ");
  EXPECT_FALSE(parse_npy(fortran, "f.npy").ok());
}

}  // namespace
}  // namespace kiln
