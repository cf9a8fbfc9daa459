// File readers and writers: round trips through files the tests write, the real Fashion-MNIST
// headers, and one test per kind of bad input, each checking the message names the file and
// says what was wrong.
#include <gtest/gtest.h>
#include <sys/resource.h>  // setrlimit: the memory test caps its child's address space
#include <sys/wait.h>      // waitpid
#include <unistd.h>        // getpid, fork
#include <zlib.h>          // gzopen, gzwrite: the tests write their own gzipped IDX files

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <new>  // bad_alloc
#include <string>
#include <vector>

#include "hetdro/check.h"  // InputError
#include "hetdro/io.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;

// Values that survive no accidental conversion: distinct, signed, not round numbers.
std::vector<float> some_floats(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(seed + 1.7f * float(i)) * 3.0f;
  return v;
}

class Io : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("hetdro_io_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void write_bytes(const std::string& file, const std::string& bytes) const {
    std::ofstream(file, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  }
  std::string read_bytes(const std::string& file) const {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Keeps the first `keep` bytes of the file.
  void cut(const std::string& file, size_t keep) const {
    write_bytes(file, read_bytes(file).substr(0, keep));
  }

  fs::path dir_;
};

// `run` must throw InputError whose message names `file` and holds every one of `words`.
void expect_input_error(const std::function<void()>& run, const std::string& file,
                        std::initializer_list<const char*> words) {
  try {
    run();
    ADD_FAILURE() << "expected an InputError about " << file;
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(file), std::string::npos) << message;
    for (const char* word : words) EXPECT_NE(message.find(word), std::string::npos) << message;
  }
}

// The message of the InputError that `run` throws ("" and a failure when it throws none).
std::string input_error_message(const std::function<void()>& run) {
  try {
    run();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

// An NPY file written by hand, to reach the dtypes and versions hetdro does not write.
std::string npy_bytes(int major, const std::string& dict, const std::string& payload) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  header.append(63 - (prefix + header.size()) % 64, ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY", 6) + char(major) + '\0';
  for (size_t i = 0; i < prefix - 8; ++i) bytes += char(header.size() >> (8 * i) & 0xff);
  return bytes + header + payload;
}

template <typename T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// IDX header: two zero bytes, the type, the rank, then big-endian dimensions.
std::string idx_bytes(int type, const std::vector<uint32_t>& dims, const std::string& payload) {
  std::string bytes = {'\0', '\0', char(type), char(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes += char(d >> shift & 0xff);
  return bytes + payload;
}

void write_gzip(const std::string& file, const std::string& bytes) {
  gzFile gz = gzopen(file.c_str(), "wb");
  ASSERT_NE(gz, nullptr);
  ASSERT_EQ(gzwrite(gz, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(gz), Z_OK);
}

// --- NPY ------------------------------------------------------------------------------------

TEST_F(Io, NpyFloat32RoundTrip) {
  const std::vector<int64_t> shape = {3, 4, 5};
  const auto x = some_floats(60, 1);
  write_npy(path("x.npy"), x.data(), shape);
  Array<float> back = read_npy_features(path("x.npy"));
  EXPECT_EQ(back.shape, shape);
  EXPECT_EQ(back.rows(), 3);
  EXPECT_EQ(back.data, x);

  // The spec: version 1.0, header padded so the payload starts at a multiple of 64.
  const std::string bytes = read_bytes(path("x.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_length = uint8_t(bytes[8]) | uint8_t(bytes[9]) << 8;
  EXPECT_EQ((10 + header_length) % 64, 0u);
  EXPECT_EQ(bytes.size(), 10 + header_length + 60 * sizeof(float));
  const std::string header = bytes.substr(10, header_length);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (3, 4, 5)"), std::string::npos) << header;
}

TEST_F(Io, NpyInt32LabelsRoundTrip) {
  const std::vector<int32_t> y = {0, 9, -3, 2147483647, 5};
  write_npy(path("y.npy"), y.data(), {5});
  EXPECT_EQ(read_npy_labels(path("y.npy")), y);
  EXPECT_NE(read_bytes(path("y.npy")).find("'shape': (5,)"), std::string::npos);
  // A column vector [n, 1] is labels too.
  write_npy(path("y1.npy"), y.data(), {5, 1});
  EXPECT_EQ(read_npy_labels(path("y1.npy")), y);
}

TEST_F(Io, NpyUint8FeaturesScaleToUnitInterval) {
  const std::vector<uint8_t> x = {0, 1, 128, 255, 51, 17};
  write_npy(path("x.npy"), x.data(), {2, 3});
  Array<float> back = read_npy_features(path("x.npy"));
  EXPECT_EQ(back.shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(back.data.size(), 6u);
  EXPECT_EQ(back.data[0], 0.0f);
  EXPECT_FLOAT_EQ(back.data[1], 1.0f / 255);
  EXPECT_FLOAT_EQ(back.data[2], 128.0f / 255);
  EXPECT_EQ(back.data[3], 1.0f);  // exactly, not 0.99999994
  EXPECT_FLOAT_EQ(back.data[4], 0.2f);
  // Read as labels, uint8 stays integral.
  write_npy(path("y.npy"), x.data(), {6});
  EXPECT_EQ(read_npy_labels(path("y.npy")), (std::vector<int32_t>{0, 1, 128, 255, 51, 17}));
}

TEST_F(Io, NpyReadsFloat64Int64AndVersions2And3) {
  const std::vector<double> x = {1.5, -2.25, 1e-3, 3.0};
  write_bytes(path("x8.npy"), npy_bytes(2,
                                        "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (2L, 2L), }",
                                        raw(x)));
  Array<float> back = read_npy_features(path("x8.npy"));
  EXPECT_EQ(back.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(back.data, (std::vector<float>{1.5f, -2.25f, 1e-3f, 3.0f}));

  const std::vector<int64_t> y = {3, 0, 7};
  write_bytes(
      path("y8.npy"),
      npy_bytes(3, "{\"descr\": \"<i8\", \"shape\": (3,), \"fortran_order\": False}", raw(y)));
  EXPECT_EQ(read_npy_labels(path("y8.npy")), (std::vector<int32_t>{3, 0, 7}));

  const std::vector<int8_t> y1 = {-1, 4};
  write_bytes(path("yi1.npy"),
              npy_bytes(1, "{'descr': '|i1', 'fortran_order': False, 'shape': (2,), }", raw(y1)));
  EXPECT_EQ(read_npy_labels(path("yi1.npy")), (std::vector<int32_t>{-1, 4}));
}

TEST_F(Io, NpyRejectsLabelsOutsideInt32) {
  const std::vector<int64_t> y = {1, int64_t(1) << 40};
  const std::string file = path("big.npy");
  write_bytes(file,
              npy_bytes(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", raw(y)));
  expect_input_error([&] { read_npy_labels(file); }, file, {"1099511627776", "index 1", "int32"});
}

TEST_F(Io, NpyRejectsFortranOrderAndMatrixLabels) {
  const std::vector<float> x = {1, 2, 3, 4};
  const std::string file = path("f.npy");
  write_bytes(file,
              npy_bytes(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", raw(x)));
  expect_input_error([&] { read_npy_features(file); }, file, {"fortran_order", "C-ordered"});

  write_npy(path("y.npy"), x.data(), {2, 2});
  expect_input_error([&] { read_npy_labels(path("y.npy")); }, path("y.npy"), {"2x2", "[n]"});
}

TEST_F(Io, NpyMalformedHeader) {
  const std::string file = path("m.npy");
  write_bytes(file, npy_bytes(1, "{'descr': '<f4', 'shape': (2, 2), }", std::string(16, '\0')));
  expect_input_error([&] { read_npy_features(file); }, file, {"malformed", "fortran_order"});
  write_bytes(file, npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2}",
                              std::string(16, '\0')));
  expect_input_error([&] { read_npy_features(file); }, file, {"malformed", "expected"});
}

// --- IDX ------------------------------------------------------------------------------------

TEST_F(Io, IdxPlainAndGzipped) {
  std::vector<uint8_t> pixels(2 * 3 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 11);
  const std::string bytes = idx_bytes(0x08, {2, 3, 4}, raw(pixels));
  write_bytes(path("plain-idx3-ubyte"), bytes);
  // The name says nothing: gzip is recognised by content.
  write_gzip(path("gzipped-idx3-ubyte"), bytes);
  ASSERT_EQ(read_bytes(path("gzipped-idx3-ubyte")).substr(0, 2), "\x1f\x8b");
  for (const char* name : {"plain-idx3-ubyte", "gzipped-idx3-ubyte"}) {
    SCOPED_TRACE(name);
    Array<uint8_t> a = read_idx(path(name));
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(a.data, pixels);
  }
}

TEST_F(Io, FashionMnistHeaders) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  const std::string images = dir + "train-images-idx3-ubyte.gz";
  const std::string labels = dir + "train-labels-idx1-ubyte.gz";
  if (!fs::exists(images) || !fs::exists(labels)) GTEST_SKIP() << "no Fashion-MNIST in " << dir;
  Array<uint8_t> x = read_idx(images);
  EXPECT_EQ(x.shape, (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(x.data.size(), 60000u * 28 * 28);
  Array<uint8_t> y = read_idx(labels);
  EXPECT_EQ(y.shape, (std::vector<int64_t>{60000}));
  ASSERT_FALSE(y.data.empty());
  EXPECT_EQ(y.data[0], 9);  // the first training image is an ankle boot
  EXPECT_EQ(*std::max_element(y.data.begin(), y.data.end()), 9);
}

// --- CSV ------------------------------------------------------------------------------------

TEST_F(Io, CsvReadsFeaturesAndNamedLabel) {
  const std::string file = path("t.csv");
  // A byte-order mark, a quoted name, the label in the middle, CRLF, spaces and a blank line.
  write_bytes(file,
              "\xEF\xBB\xBF"
              "a,\"label\",b\r\n"
              "1.5, 3, -2\r\n"
              "\r\n"
              "0,0,1e-3\n"
              "+4,9,\"7\"\n");
  CsvTable t = read_csv(file, "label");
  EXPECT_EQ(t.x.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(t.x.data, (std::vector<float>{1.5f, -2.0f, 0.0f, 1e-3f, 4.0f, 7.0f}));
  EXPECT_EQ(t.y, (std::vector<int32_t>{3, 0, 9}));
}

TEST_F(Io, CsvNonNumericCellNamesRowAndColumn) {
  const std::string file = path("bad.csv");
  write_bytes(file, "x,y,label\n1,2,0\n3,abc,1\n");
  expect_input_error([&] { read_csv(file, "label"); }, file,
                     {"row 2", "line 3", "column 2", "\"y\"", "\"abc\"", "number"});
  write_bytes(file, "x,y,label\n1,2,0\n3,,1\n");
  expect_input_error([&] { read_csv(file, "label"); }, file, {"row 2", "column 2", "empty"});
  write_bytes(file, "x,y,label\n1,2,0.5\n");
  expect_input_error([&] { read_csv(file, "label"); }, file, {"row 1", "\"label\"", "integer"});
  write_bytes(file, "x,y,label\n1,nan,0\n");
  expect_input_error([&] { read_csv(file, "label"); }, file, {"row 1", "\"y\"", "finite"});
}

TEST_F(Io, CsvRaggedRow) {
  const std::string file = path("ragged.csv");
  write_bytes(file, "x,y,label\n1,2,0\n3,1\n");
  expect_input_error([&] { read_csv(file, "label"); }, file,
                     {"row 2", "line 3", "2 fields", "expected 3"});
}

TEST_F(Io, CsvMissingLabelColumn) {
  const std::string file = path("nolabel.csv");
  write_bytes(file, "x,y,target\n1,2,0\n");
  expect_input_error([&] { read_csv(file, "label"); }, file,
                     {"missing", "'label'", "\"x\", \"y\", \"target\""});
  write_bytes(file, "");
  expect_input_error([&] { read_csv(file, "label"); }, file, {"empty", "header"});
}

TEST_F(Io, CsvWithoutLabelsIsAllFeaturesWhenLabelsAreNotRequired) {
  const std::string file = path("features.csv");
  write_bytes(file, "x,y,target\n1,2,0\n3,4,5\n");
  CsvTable t = read_csv(file, "label", false);
  EXPECT_EQ(t.x.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.x.data, (std::vector<float>{1, 2, 0, 3, 4, 5}));
  EXPECT_TRUE(t.y.empty());
  // When the label column is there, it is still left out of the features.
  t = read_csv(file, "target", false);
  EXPECT_EQ(t.x.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.y, (std::vector<int32_t>{0, 5}));
}

// --- safetensors ----------------------------------------------------------------------------

TEST_F(Io, SafetensorsRoundTripWithMetadata) {
  const std::vector<NamedTensor> tensors = {
      {"encoders.full28.fc.weight", {2, 3}, some_floats(6, 2)},
      {"classifier.bias", {3}, {0.5f, -1.0f, 2.0f}},
      {"empty", {0, 4}, {}},
      {"anchors.mean", {1}, {42.0f}},
  };
  const std::map<std::string, std::string> metadata = {{"step", "600"}, {"epoch", "1"}};
  const std::string file = path("c.safetensors");
  write_safetensors(file, tensors, metadata);

  SafetensorsFile back = read_safetensors(file);
  EXPECT_EQ(back.metadata, metadata);
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].name, tensors[i].name);  // in the order written
    EXPECT_EQ(back.tensors[i].shape, tensors[i].shape);
    EXPECT_EQ(back.tensors[i].data, tensors[i].data);
  }
  const NamedTensor* bias = back.find("classifier.bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->data[2], 2.0f);
  EXPECT_EQ(back.find("classifier.weight"), nullptr);

  // The data starts 8-byte aligned, and the header says what the format says.
  const std::string bytes = read_bytes(file);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(length % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + length + (6 + 3 + 0 + 1) * sizeof(float));
  const std::string header = bytes.substr(8, length);
  EXPECT_NE(header.find("\"classifier.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":"
                        "[24,36]}"),
            std::string::npos)
      << header;
  EXPECT_NE(header.find("\"__metadata__\":{\"epoch\":\"1\",\"step\":\"600\"}"), std::string::npos)
      << header;
}

TEST_F(Io, SafetensorsWithoutMetadataOrTensors) {
  write_safetensors(path("e.safetensors"), {}, {});
  SafetensorsFile back = read_safetensors(path("e.safetensors"));
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

// --- writers leave nothing half-written -----------------------------------------------------

TEST_F(Io, WritersReplaceFilesAndLeaveNoTemporaries) {
  const std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_npy(path("x.npy"), a.data(), {2});
  write_npy(path("x.npy"), b.data(), {3});
  EXPECT_EQ(read_npy_features(path("x.npy")).data, b);
  write_safetensors(path("c.safetensors"), {{"w", {2}, a}}, {});
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
  }
  EXPECT_EQ(files, 2u);

  // A folder that does not exist: check_output, which every command runs on its outputs before
  // the work, calls it bad input; a writer that still meets it (the folder went away during the
  // work) reports an environment failure (exit 1). Either names the path; nothing is created.
  const std::string nowhere = path("missing/x.npy");
  expect_input_error(
      [&] {
        check_output(nowhere, {"--out", "an NPY file", nullptr, {}});
      },
      nowhere, {"missing", "does not exist"});
  for (const std::function<void()>& write :
       std::vector<std::function<void()>>{[&] { write_npy(nowhere, a.data(), {2}); },
                                          [&] {
                                            write_safetensors(nowhere, {{"w", {2}, a}}, {});
                                          }}) {
    try {
      write();
      ADD_FAILURE() << "wrote into a folder that does not exist";
    } catch (const InputError& e) {
      ADD_FAILURE() << "an environment failure reported as bad input: " << e.what();
    } catch (const WriteError& e) {
      EXPECT_NE(std::string(e.what()).find(nowhere), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cannot create"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(fs::exists(path("missing")));
}

TEST_F(Io, EveryReaderTakesUnderflowAsZeroAndRefusesOverflowByOneRule) {
  // 1e-50 and 1e-400 underflow float32 (and 1e-400 double too): they round to 0, as a float64
  // NPY's 1e-50 does. 1e39 is past float32's largest value: refused, by the same words.
  const std::string csv = path("tiny.csv");
  write_bytes(csv, "x,y,label\n1e-50,1e-400,0\n1e-40,-1e-50,1\n");
  const CsvTable t = read_csv(csv, "label");
  EXPECT_EQ(t.x.data, (std::vector<float>{0.0f, 0.0f, float(1e-40), -0.0f}));
  const std::vector<double> tiny = {1e-50, 1e-40};
  write_bytes(path("tiny.npy"),
              npy_header("<f8", {2}) + std::string(reinterpret_cast<const char*>(tiny.data()), 16));
  EXPECT_EQ(read_npy_features(path("tiny.npy")).data, (std::vector<float>{0.0f, float(1e-40)}));
  write_bytes(csv, "x,y,label\n1e39,1,0\n");
  expect_input_error([&] { read_csv(csv, "label"); }, csv,
                     {"row 1", "\"x\"", "float32's range", "underflow round to 0"});
}

// --- bad input: one test per kind, each reader ----------------------------------------------

TEST_F(Io, MissingFile) {
  const std::string file = path("absent.bin");
  expect_input_error([&] { read_npy_features(file); }, file, {"not found", "NPY"});
  expect_input_error([&] { read_npy_labels(file); }, file, {"not found", "NPY"});
  expect_input_error([&] { read_idx(file); }, file, {"not found", "IDX"});
  expect_input_error([&] { read_csv(file, "label"); }, file, {"not found", "CSV"});
  expect_input_error([&] { read_safetensors(file); }, file, {"not found", "safetensors"});
  // A folder is not a file either.
  expect_input_error([&] { read_npy_features(dir_.string()); }, dir_.string(), {"folder"});
}

TEST_F(Io, BadMagic) {
  const std::string file = path("not-data.bin");
  write_bytes(file, "PK\x03\x04 this is a zip file, not a data file at all");
  expect_input_error([&] { read_npy_features(file); }, file, {"bad magic", "\\x93NUMPY", "PK"});
  expect_input_error([&] { read_npy_labels(file); }, file, {"bad magic"});
  expect_input_error([&] { read_idx(file); }, file, {"bad magic", "00 00"});
  expect_input_error([&] { read_safetensors(file); }, file, {"bad magic"});
  // An NPY file is not IDX or safetensors, and a gzipped NPY file is not IDX after gunzip.
  const std::vector<float> x = {1, 2};
  write_npy(path("x.npy"), x.data(), {2});
  expect_input_error([&] { read_idx(path("x.npy")); }, path("x.npy"), {"bad magic"});
  expect_input_error([&] { read_safetensors(path("x.npy")); }, path("x.npy"), {"bad magic"});
  write_gzip(path("x.npy.gz"), read_bytes(path("x.npy")));
  expect_input_error([&] { read_idx(path("x.npy.gz")); }, path("x.npy.gz"),
                     {"bad magic", "gunzip"});
  // Gzipped NPY is not NPY, and binary data is not CSV.
  expect_input_error([&] { read_npy_features(path("x.npy.gz")); }, path("x.npy.gz"),
                     {"bad magic", "gzip"});
  expect_input_error([&] { read_csv(path("x.npy"), "label"); }, path("x.npy"),
                     {"bad magic", "binary", "CSV"});
  // Too short to hold a magic at all.
  write_bytes(file, "");
  expect_input_error([&] { read_npy_features(file); }, file, {"bad magic"});
  expect_input_error([&] { read_idx(file); }, file, {"bad magic"});
}

TEST_F(Io, TruncatedPayload) {
  const std::vector<float> x = some_floats(12, 3);
  const std::string npy = path("x.npy");
  write_npy(npy, x.data(), {3, 4});
  cut(npy, read_bytes(npy).size() - 5);
  expect_input_error([&] { read_npy_features(npy); }, npy,
                     {"truncated payload", "3x4 float32 (48 bytes)", "43 bytes"});
  cut(npy, 20);
  expect_input_error([&] { read_npy_features(npy); }, npy, {"truncated header"});

  std::vector<uint8_t> pixels(6 * 28 * 28);
  // Varied bytes, so that half of the gzipped file still holds some of the payload.
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t((i * i * 2654435761u) >> 13);
  const std::string bytes = idx_bytes(0x08, {6, 28, 28}, raw(pixels));
  const std::string idx = path("x-idx3-ubyte");
  write_bytes(idx, bytes.substr(0, 1000));
  expect_input_error([&] { read_idx(idx); }, idx,
                     {"truncated payload", "6x28x28 uint8 (4704 bytes)", "984 bytes"});
  // A gzip stream cut short.
  const std::string gz = path("x-idx3-ubyte.gz");
  write_gzip(gz, bytes);
  cut(gz, read_bytes(gz).size() / 2);
  expect_input_error([&] { read_idx(gz); }, gz, {"truncated payload", "6x28x28", "cut short"});
  cut(gz, 12);
  expect_input_error([&] { read_idx(gz); }, gz, {"truncated gzip stream"});
  // Damage inside the deflate data is corruption, not truncation.
  write_gzip(gz, bytes);
  std::string damaged = read_bytes(gz);
  for (size_t i = 20; i < 60; ++i) damaged[i] = char(~damaged[i]);
  write_bytes(gz, damaged);
  expect_input_error([&] { read_idx(gz); }, gz, {"corrupt gzip stream"});

  const std::string st = path("c.safetensors");
  write_safetensors(st, {{"w", {3, 4}, x}}, {{"step", "1"}});
  cut(st, read_bytes(st).size() - 4);
  expect_input_error([&] { read_safetensors(st); }, st, {"truncated", "'w'"});
  cut(st, 20);
  expect_input_error([&] { read_safetensors(st); }, st, {"truncated"});
}

TEST_F(Io, UnsupportedDtype) {
  const std::string npy = path("c.npy");
  write_bytes(npy, npy_bytes(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                             std::string(16, '\0')));
  expect_input_error([&] { read_npy_features(npy); }, npy,
                     {"unsupported dtype", "'<c8'", "float32", "float64", "uint8"});
  expect_input_error([&] { read_npy_labels(npy); }, npy,
                     {"unsupported dtype", "'<c8'", "int64", "int32"});
  // Big-endian is a dtype we do not read either.
  write_bytes(npy, npy_bytes(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                             std::string(8, '\0')));
  expect_input_error([&] { read_npy_features(npy); }, npy, {"unsupported dtype", "'>f4'"});
  // Structured arrays have a list for descr.
  write_bytes(npy, npy_bytes(1,
                             "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, "
                             "'shape': (2,), }",
                             std::string(16, '\0')));
  expect_input_error([&] { read_npy_features(npy); }, npy, {"unsupported dtype", "structured"});

  const std::string idx = path("f-idx2-float");
  write_bytes(idx, idx_bytes(0x0D, {2, 2}, std::string(16, '\0')));
  expect_input_error([&] { read_idx(idx); }, idx, {"unsupported dtype", "0x0D", "0x08"});

  const std::string st = path("h.safetensors");
  const std::string header = R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  bytes[0] = char(header.size());
  write_bytes(st, bytes + header + std::string(4, '\0'));
  expect_input_error([&] { read_safetensors(st); }, st, {"unsupported dtype", "'F16'", "F32"});
}

// --- hostile input: one test per class of defect, over every reader it concerns ------------

// Deeply nested headers are refused at a fixed depth (no recursion that a file can drive
// into a stack overflow), and the message quotes only a short excerpt of the header.
TEST_F(Io, DeepNestingIsRefusedAndNotEchoed) {
  const std::string npy = path("deep.npy");
  for (int major : {2, 3}) {
    SCOPED_TRACE(major);
    write_bytes(npy, npy_bytes(major,
                               "{'descr': '<f4', 'fortran_order': False, 'shape': " +
                                   std::string(100000, '(') + "}",
                               ""));
    const std::string m = input_error_message([&] { read_npy_features(npy); });
    EXPECT_NE(m.find(npy), std::string::npos) << m;
    EXPECT_NE(m.find("at most 32 levels"), std::string::npos) << m;
    EXPECT_LT(m.size(), 400u) << m;
    EXPECT_NE(m.find("(100084 bytes)"), std::string::npos) << m;  // the header's size, not it
  }
  // 32 levels are still parsed: the descr of a nested structured dtype is refused as such.
  write_bytes(npy, npy_bytes(1,
                             "{'descr': " + std::string(31, '[') + std::string(31, ']') +
                                 ", 'fortran_order': False, 'shape': (2,), }",
                             std::string(8, '\0')));
  expect_input_error([&] { read_npy_features(npy); }, npy, {"unsupported dtype", "structured"});

  const std::string st = path("deep.safetensors");
  for (const std::string& json :
       {"{\"w\":" + std::string(100000, '[') + std::string(100000, ']') + "}",
        "{\"w\":" + std::string(100000, '['), std::string(100000, '[') + std::string(100000, ']'),
        "{\"w\":" + std::string(50000, '{') + "}"}) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(json.size() >> (8 * i) & 0xff);
    write_bytes(st, bytes + json);
    const std::string m = input_error_message([&] { read_safetensors(st); });
    EXPECT_NE(m.find(st), std::string::npos) << m;
    EXPECT_LT(m.size(), 400u) << m;
  }
  // A tensor entry of the wrong kind is quoted, not dumped whole.
  std::string json = "{\"w\":[7";
  for (int i = 0; i < 50000; ++i) json += ",7";
  json += "]}";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(json.size() >> (8 * i) & 0xff);
  write_bytes(st, bytes + json);
  const std::string m = input_error_message([&] { read_safetensors(st); });
  EXPECT_NE(m.find("malformed header: tensor 'w'"), std::string::npos) << m;
  EXPECT_LT(m.size(), 400u) << m;
}

// A small file whose header claims a huge payload fails before anything that size is
// allocated: in a child process whose address space is capped at 256 MiB above its size now,
// each reader must still throw its InputError (an allocation of the claimed 3 GB would fail
// there with bad_alloc instead).
TEST_F(Io, HugeClaimsFailBeforeAllocating) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer reserves more address space than the cap allows";
#endif
  const std::string idx = path("big-idx3-ubyte"), gz = path("big-idx3-ubyte.gz");
  write_bytes(idx, idx_bytes(0x08, {3000, 1000, 1000}, std::string(65536, '\x11')));
  write_gzip(gz, read_bytes(idx));
  const std::string npy = path("big.npy");
  write_bytes(npy,
              npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3000, 250000), }",
                        std::string(65536, '\0')));
  const std::string st = path("big.safetensors");
  const std::string json =
      R"({"w":{"dtype":"F32","shape":[750000000],"data_offsets":[0,3000000000]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(json.size() >> (8 * i) & 0xff);
  write_bytes(st, bytes + json + std::string(65536, '\0'));

  const std::vector<std::pair<std::string, std::function<void()>>> cases = {
      {idx, [&] { read_idx(idx); }},
      {gz, [&] { read_idx(gz); }},
      {npy, [&] { read_npy_features(npy); }},
      {st, [&] { read_safetensors(st); }},
  };
  for (const auto& [file, read] : cases) {
    SCOPED_TRACE(file);
    long vm_kb = 0;
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
    ASSERT_GT(vm_kb, 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const rlim_t cap = rlim_t(vm_kb) * 1024 + (rlim_t(256) << 20);
      const rlimit limit = {cap, cap};
      if (setrlimit(RLIMIT_AS, &limit) != 0) _exit(5);
      try {
        read();
      } catch (const InputError& e) {
        const std::string m = e.what();
        _exit(m.find(file) != std::string::npos && m.find("truncated") != std::string::npos ? 0
                                                                                            : 1);
      } catch (const std::bad_alloc&) {
        _exit(3);
      } catch (...) {
        _exit(4);
      }
      _exit(2);
    }
    int child = 0;
    ASSERT_EQ(waitpid(pid, &child, 0), pid);
    ASSERT_TRUE(WIFEXITED(child)) << "the reader crashed";
    EXPECT_EQ(WEXITSTATUS(child), 0)
        << "1: the message lacks the file or 'truncated'; 2: no error; 3: it ran out of memory; "
           "4: another exception; 5: setrlimit failed";
  }
}

// Sizes computed from a file's header overflow nothing: a product past 2^63 is an error that
// names the file.
TEST_F(Io, SizesThatOverflowAreRefused) {
  const std::string npy = path("o.npy");
  write_bytes(npy, npy_bytes(1,
                             "{'descr': '<f4', 'fortran_order': False, 'shape': "
                             "(4611686018427387904, 4), }",
                             ""));
  expect_input_error([&] { read_npy_features(npy); }, npy, {"too large", "2^63"});
  write_bytes(npy, npy_bytes(1,
                             "{'descr': '<i8', 'fortran_order': False, 'shape': "
                             "(1152921504606846977,), }",
                             ""));
  expect_input_error([&] { read_npy_labels(npy); }, npy, {"too large", "1152921504606846977"});
  write_bytes(npy, npy_bytes(1,
                             "{'descr': '<f4', 'fortran_order': False, 'shape': "
                             "(99999999999999999999,), }",
                             ""));
  expect_input_error([&] { read_npy_features(npy); }, npy, {"malformed", "64 bits"});

  const std::string idx = path("o-idx3-ubyte");
  write_bytes(idx, idx_bytes(0x08, {0xffffffff, 0xffffffff, 0xffffffff}, ""));
  expect_input_error([&] { read_idx(idx); }, idx, {"too large", "4294967295x4294967295"});

  const std::string st = path("o.safetensors");
  auto safetensors = [&](const std::string& header) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(header.size() >> (8 * i) & 0xff);
    write_bytes(st, bytes + header + std::string(16, '\0'));
  };
  safetensors(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})");
  expect_input_error([&] { read_safetensors(st); }, st, {"too large", "'w'"});
  safetensors(R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,16]}})");
  expect_input_error([&] { read_safetensors(st); }, st, {"non-negative integers"});
  // Offsets near 2^64: the span is checked against the shape, the end against the file.
  safetensors(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551615]}})");
  expect_input_error([&] { read_safetensors(st); }, st, {"span 15 bytes"});
  safetensors(
      R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551599,18446744073709551615]}})");
  expect_input_error([&] { read_safetensors(st); }, st, {"truncated", "'w'"});
}

// Files that are something else entirely say so, with the file's name.
TEST_F(Io, ForeignFilesAreNamedForWhatTheyAre) {
  const std::string zip = path("model.pt");
  write_bytes(zip, std::string("PK\x03\x04\x14\x00\x00\x00\x08\x00", 10) + std::string(200, 'z'));
  expect_input_error([&] { read_safetensors(zip); }, zip,
                     {"not a safetensors file", "zip archive", "PK\\x03\\x04"});
  // A small length-prefixed file whose length is not a length, and one whose length is
  // plausible but which holds no JSON header.
  const std::string other = path("other.bin");
  write_bytes(other, std::string("\x40\x00\x00\x00\x01\x00\x00\x00", 8) + std::string(64, 'x'));
  expect_input_error([&] { read_safetensors(other); }, other,
                     {"not a safetensors file", "more than the whole file"});
  write_bytes(other, std::string("\x10\x00\x00\x00\x00\x00\x00\x00", 8) + std::string(64, 'x'));
  expect_input_error([&] { read_safetensors(other); }, other, {"not a safetensors file", "'{'"});
  // A real safetensors file cut inside its header is truncated, not foreign.
  write_safetensors(path("c.safetensors"), {{"w", {2}, {1, 2}}}, {});
  cut(path("c.safetensors"), 30);
  expect_input_error([&] { read_safetensors(path("c.safetensors")); }, path("c.safetensors"),
                     {"truncated header"});
}

}  // namespace
}  // namespace hetdro
