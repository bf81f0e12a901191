//===- Loading.cpp - data sets bound to a model's inputs -------------------===//
//
// Every format is read into a Table of named fields (runtime/Sources.h,
// Data.h, Mnist.h), then bound to the model's inputs: image data sets by
// type (pixels to the f32 input, labels to the i32 one), arrays and CSV
// files with a header by name, other CSV files column by column.
//
//===----------------------------------------------------------------------===//

#include "runtime/Training.h"

#include "runtime/Augment.h"
#include "runtime/Sources.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <numeric>
#include <sys/stat.h>

using namespace nnc;
using namespace nnc::rt;

/// A data value as short as it reads back: 7, 0.5, 1e+12.
static std::string formatValue(float v) {
  char buf[32];
  for (int digits : {6, 9}) { // the shortest form that reads back as v
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(buf, nullptr) == v)
      break;
  }
  return buf;
}

/// Whole numbers in the i32 field `f` of `t`, within [0, in.classes) when
/// the input is a class label: compiled code indexes with them unchecked.
static Status checkLabels(const Table &t, const Field &f, const ModelInput &in) {
  auto at = [&](size_t i) {
    int64_t r = static_cast<int64_t>(i) / f.width;
    return t.where(f, r);
  };
  if (f.values.empty())
    return Status::ok(); // a field held as bytes is whole by construction
  for (size_t i = 0; i < f.values.size(); ++i) {
    float v = f.values[i];
    if (v != std::floor(v) || std::fabs(v) > 2147483647.0f)
      return Status::error(at(i) + ": input '" + in.name + "' is i32, but the data holds " +
                           formatValue(v));
    if (in.classes > 0 && (v < 0 || v >= static_cast<float>(in.classes)))
      return Status::error(at(i) + ": label " + formatValue(v) + " of input '" + in.name +
                           "' is outside the model's " + std::to_string(in.classes) +
                           " classes [0, " + std::to_string(in.classes) + ")");
  }
  return Status::ok();
}

Binding rt::bindingOf(const Table &t, const std::vector<ModelInput> &inputs) {
  for (const ModelInput &in : inputs)
    if (std::none_of(t.fields.begin(), t.fields.end(), [&](const Field &f) { return f.name == in.name; }))
      return Binding::ByPosition;
  return Binding::ByName;
}

/// The source a table's rows name in errors.
static std::string sourceOf(const Table &t) { return t.fields.empty() ? "the data" : t.fields[0].source; }

Status rt::bindInputs(Table &&data, const std::vector<ModelInput> &inputs, Binding binding, Table &out) {
  out = Table();
  out.count = data.count;
  out.lines = data.lines;
  size_t next = 0;           // next column (ByPosition)
  int movedTo[2] = {-1, -1}; // ByType: the input each field moved to
  for (const ModelInput &in : inputs) {
    Field f{in.name, in.width, in.integer, {}};
    if (binding == Binding::ByType) {
      int field = in.integer ? 1 : 0;
      Field &src = data.fields[field];
      if (src.width != in.width)
        return Status::error(src.source + ": input '" + in.name + "' takes " + std::to_string(in.width) +
                             " values per sample, but the data's " + src.name + " have " +
                             std::to_string(src.width));
      f.source = src.source;
      if (movedTo[field] < 0) {
        f.values = std::move(src.values);
        f.pixels = std::move(src.pixels);
        f.from = std::move(src.from);
        f.rows = std::move(src.rows);
        movedTo[field] = static_cast<int>(out.fields.size());
      } else {
        const Field &first = out.fields[movedTo[field]];
        f.values = first.values;
        f.pixels = first.pixels;
        f.from = first.from;
        f.rows = first.rows;
      }
    } else {
      size_t first = next;
      if (binding == Binding::ByName) {
        first = 0;
        while (first < data.fields.size() && data.fields[first].name != in.name)
          ++first;
        if (first == data.fields.size())
          return Status::error(sourceOf(data) + ": no array or column named '" + in.name + "' for the model's input");
      }
      Field &src = data.fields[first];
      f.source = src.source;
      if (src.width == in.width && binding == Binding::ByName) {
        f.values = std::move(src.values);
        f.pixels = std::move(src.pixels);
        f.from = std::move(src.from);
        f.rows = std::move(src.rows);
      } else if (src.width == in.width && src.width > 1) {
        return Status::error(src.source + ": '" + src.name + "' cannot feed input '" + in.name + "' by position");
      } else {
        // One-wide columns from `first` on make up the input's values.
        if (first + in.width > data.fields.size())
          return Status::error(sourceOf(data) + ": " + std::to_string(data.fields.size()) +
                               " columns, too few for input '" + in.name + "' (" + std::to_string(in.width) +
                               " values per sample from column " + std::to_string(first + 1) + ")");
        f.values.resize(data.count * in.width);
        for (int64_t c = 0; c < in.width; ++c) {
          const Field &col = data.fields[first + c];
          if (col.width != 1)
            return Status::error(col.source + ": '" + col.name + "' has " + std::to_string(col.width) +
                                 " values per sample, but input '" + in.name + "' takes " +
                                 std::to_string(in.width));
          for (int64_t r = 0; r < data.count; ++r)
            f.values[r * in.width + c] = col.values[r];
        }
      }
      next = first + in.width;
    }
    if (in.integer)
      if (Status s = checkLabels(out, f, in); !s)
        return s;
    out.fields.push_back(std::move(f));
  }
  if (binding == Binding::ByPosition && next != data.fields.size())
    return Status::error(sourceOf(data) + ": " + std::to_string(data.fields.size()) +
                         " columns, but the model's inputs take " + std::to_string(next) +
                         " (or name the columns after the inputs in a header line)");
  return Status::ok();
}

/// Rows of a shuffled batch lie anywhere in the data set: the loads of the
/// row this many ahead are started while a row is copied.
constexpr size_t kAhead = 4;

Status rt::batchInto(const Table &t, const std::vector<ModelInput> &inputs, const std::vector<int64_t> &indices,
                     std::vector<HostTensor> &out, const Pipeline *pipeline, int64_t epoch) {
  out.resize(inputs.size());
  std::vector<float> scratch;
  for (size_t i = 0; i < inputs.size(); ++i) {
    HostTensor &x = out[i];
    x.name = inputs[i].name;
    x.shape.assign(1, static_cast<int64_t>(indices.size()));
    x.shape.insert(x.shape.end(), inputs[i].dims.begin(), inputs[i].dims.end());
    const Field &f = t.fields[i];
    x.data.resize(indices.size() * f.width);
    bool transform = pipeline && !pipeline->empty() && pipeline->input == static_cast<int>(i);
    for (size_t r = 0; r < indices.size(); ++r) {
      if (r + kAhead < indices.size())
        f.prefetchRow(indices[r + kAhead]);
      float *row = x.data.data() + r * f.width;
      if (Status s = f.copyRow(indices[r], row); !s)
        return s;
      if (transform)
        applyTransforms(pipeline->transforms, pipeline->dims, row, epoch > 0,
                        SampleKey{pipeline->seed, epoch, indices[r]}, scratch);
    }
  }
  return Status::ok();
}

Status rt::batchOf(const Table &t, const std::vector<ModelInput> &inputs, const std::vector<int64_t> &indices,
                   std::vector<HostTensor> &out) {
  return batchInto(t, inputs, indices, out);
}

std::string rt::guessKind(const std::string &path) {
  auto ends = [&](const char *tail) {
    size_t n = std::strlen(tail);
    return path.size() >= n && path.compare(path.size() - n, n, tail) == 0;
  };
  if (ends(".csv"))
    return "csv";
  if (ends(".npz"))
    return "npz";
  if (!isDirectory(path))
    return "mnist"; // (and the error names the files it expected)
  if (exists(path + "/data_batch_1.bin") || exists(path + "/test_batch.bin") ||
      isDirectory(path + "/cifar-10-batches-bin"))
    return "cifar10";
  bool npy = false, dirs = false;
  if (DIR *d = opendir(path.c_str())) {
    while (dirent *e = readdir(d)) {
      std::string name = e->d_name;
      if (name[0] == '.')
        continue;
      if (name.find("idx3-ubyte") != std::string::npos) {
        closedir(d);
        return "mnist";
      }
      npy |= name.size() > 4 && name.substr(name.size() - 4) == ".npy";
      dirs |= isDirectory(path + "/" + name);
    }
    closedir(d);
  }
  return npy ? "npy" : dirs ? "images" : "mnist";
}

namespace {

/// The model's first f32 input of sizes [C, H, W], which image folders
/// fill; null when there is none.
const ModelInput *imageInput(const std::vector<ModelInput> &inputs) {
  for (const ModelInput &in : inputs)
    if (!in.integer)
      return in.dims.size() == 3 ? &in : nullptr;
  return nullptr;
}

/// Splits arrays named NAME_train and NAME_test (Keras' convention) into a
/// training and a test table; arrays named NAME are training data. The
/// arrays of each set must have one sample count.
Status splitArrays(Table &&all, Table &train, Table &test) {
  train = Table();
  test = Table();
  auto strip = [](const std::string &name, const char *tail) {
    size_t n = std::strlen(tail);
    return name.size() > n && name.compare(name.size() - n, n, tail) == 0 ? name.substr(0, name.size() - n) : "";
  };
  for (Field &f : all.fields) {
    std::string original = f.name;
    std::string base = strip(f.name, "_test");
    bool isTest = !base.empty();
    if (!isTest)
      base = strip(f.name, "_train");
    if (!base.empty())
      f.name = base;
    Table &to = isTest ? test : train;
    int64_t count = static_cast<int64_t>((f.pixels.empty() ? f.values.size() : f.pixels.size()) /
                                         static_cast<size_t>(std::max<int64_t>(1, f.width)));
    if (!to.fields.empty() && count != to.count)
      return Status::error(f.source + ": array '" + original + "' has " + std::to_string(count) +
                           " samples, but the other arrays of its set have " + std::to_string(to.count));
    to.count = count;
    to.fields.push_back(std::move(f));
  }
  return Status::ok();
}

/// Reads one source; `test` gets its test set when it has one.
Status readSource(const std::string &kind, const std::string &path, const std::vector<ModelInput> &inputs,
                  Table &train, Table &test, bool &hasTest, Binding &binding, std::vector<std::string> &classes) {
  hasTest = false;
  binding = Binding::ByType;
  if (kind == "mnist") {
    Dataset a, b;
    if (Status s = loadMnist(path, "train", a); !s)
      return s;
    if (Status s = loadMnist(path, "t10k", b); !s)
      return s;
    train = fromMnist(std::move(a));
    test = fromMnist(std::move(b));
    hasTest = true;
    return Status::ok();
  }
  if (kind == "cifar10") {
    if (Status s = loadCifar10(path, false, train); !s)
      return s;
    if (Status s = loadCifar10(path, true, test); !s)
      return s;
    hasTest = true;
    return Status::ok();
  }
  if (kind == "images") {
    const ModelInput *in = imageInput(inputs);
    if (!in)
      return Status::error(path + ": images(DIR) feeds a model whose first f32 input is an image "
                                  "[B, C, H, W]");
    std::string trainDir = isDirectory(path + "/train") ? path + "/train" : path;
    if (Status s = loadImageFolder(trainDir, in->dims[0], in->dims[1], in->dims[2], train, &classes); !s)
      return s;
    for (const char *name : {"/test", "/val"})
      if (trainDir != path && isDirectory(path + name)) {
        std::vector<std::string> testClasses;
        if (Status s = loadImageFolder(path + name, in->dims[0], in->dims[1], in->dims[2], test, &testClasses); !s)
          return s;
        if (testClasses != classes)
          return Status::error(path + name + ": its class folders differ from " + trainDir + "'s");
        hasTest = true;
        break;
      }
    return Status::ok();
  }
  if (kind == "npz" || kind == "npy") {
    Table all;
    if (Status s = kind == "npz" ? loadNpz(path, all) : loadNpyDir(path, all); !s)
      return s;
    if (Status s = splitArrays(std::move(all), train, test); !s)
      return s;
    hasTest = !test.fields.empty();
    binding = Binding::ByName;
    return Status::ok();
  }
  if (kind == "csv") {
    if (Status s = loadCsv(path, train); !s)
      return s;
    binding = bindingOf(train, inputs);
    return Status::ok();
  }
  return Status::error(path + ": unknown data kind '" + kind + "'");
}

} // namespace

Status rt::loadData(const DataSource &source, const std::vector<ModelInput> &inputs, double validation,
                    uint64_t seed, BoundData &out) {
  Table raw, rawTest;
  Binding binding = Binding::ByType;
  out.hasTest = false;
  out.testName = "test";
  if (Status s = readSource(source.kind, source.path, inputs, raw, rawTest, out.hasTest, binding, out.classNames); !s)
    return s;
  Binding testBinding = binding;
  if (!source.testPath.empty()) {
    Table ignored;
    bool alsoTest = false;
    std::vector<std::string> classes;
    // A separate test set: its training split (or its only split) is the
    // test data; one that comes with a test split of its own gives that.
    Status s = readSource(source.testKind.empty() ? guessKind(source.testPath) : source.testKind, source.testPath,
                          inputs, rawTest, ignored, alsoTest, testBinding, classes);
    if (!s)
      return s;
    if (alsoTest)
      rawTest = std::move(ignored);
    out.hasTest = true;
  }
  if (Status s = bindInputs(std::move(raw), inputs, binding, out.train); !s)
    return s;
  if (out.hasTest)
    if (Status s = bindInputs(std::move(rawTest), inputs, testBinding, out.test); !s)
      return s;
  // An empty set would train on nothing and report a loss of 0/0.
  auto empty = [&](const Table &t, const char *which) {
    std::string from = t.fields.empty() ? source.path : t.fields[0].source;
    return Status::error(from + ": the " + which + " set has no samples");
  };
  if (out.train.count == 0)
    return empty(out.train, "training");
  if (out.hasTest && out.test.count == 0)
    return empty(out.test, "test");
  if (validation > 0) {
    Table all = std::move(out.train);
    splitValidation(all, validation, seed, out.train, out.test);
    out.hasTest = true;
    out.testName = "validation";
    if (out.train.count == 0 || out.test.count == 0)
      return Status::error(source.path + ": a validation fraction of " + formatValue(static_cast<float>(validation)) +
                           " leaves " + std::to_string(out.train.count) + " of " +
                           std::to_string(all.count) + " samples for training and " +
                           std::to_string(out.test.count) + " for validation; both need at least one");
  }
  return Status::ok();
}

Status rt::setTransforms(BoundData &data, const std::vector<ModelInput> &inputs, const std::vector<Call> &transforms,
                         uint64_t seed) {
  data.pipeline = Pipeline();
  if (transforms.empty())
    return Status::ok();
  for (size_t i = 0; i < inputs.size(); ++i)
    if (!inputs[i].integer) {
      data.pipeline.input = static_cast<int>(i);
      data.pipeline.dims = inputs[i].dims;
      break;
    }
  if (data.pipeline.input < 0)
    return Status::error("transforms apply to an f32 input, and the model has none");
  for (Call t : transforms)
    if (Status s = checkTransform(t, data.pipeline.dims); !s)
      return s;
  data.pipeline.transforms = transforms;
  data.pipeline.seed = seed;
  return Status::ok();
}
