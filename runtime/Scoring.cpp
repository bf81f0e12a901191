//===- Scoring.cpp - loss and metrics over a data set ----------------------===//
//
// What a model is scored with follows from its data: i32 labels make it a
// classifier (top-1, top-k, confusion matrix); an f32 target as wide as the
// first output makes it a classifier when every target value is 0 or 1
// (binary or one-hot), else a regression (MSE, MAE, R^2). Nothing else gets
// an accuracy.
//
//===----------------------------------------------------------------------===//

#include "runtime/Training.h"

#include <algorithm>
#include <numeric>

using namespace nnc;
using namespace nnc::rt;

namespace {

enum class Task { None, Labels, Binary, OneHot, Regression };

/// The task and the input holding its targets, for an output of `width`
/// values per sample.
Task taskOf(const std::vector<ModelInput> &inputs, const Table &data, int64_t width, int &target) {
  target = -1;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].integer && inputs[i].width == 1 && width > 1) {
      target = static_cast<int>(i);
      return Task::Labels;
    }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].integer || inputs[i].width != width)
      continue;
    target = static_cast<int>(i);
    const Field &f = data.fields[i];
    bool binary = !f.isBytes() &&
                  std::all_of(f.values.begin(), f.values.end(), [](float v) { return v == 0.0f || v == 1.0f; });
    if (!binary)
      return Task::Regression;
    return width == 1 ? Task::Binary : Task::OneHot;
  }
  return Task::None;
}

int64_t argmax(const float *v, int64_t n) {
  return std::max_element(v, v + n) - v;
}

} // namespace

Status rt::score(Trainable &m, const Table &data, Score &out, int64_t batch, const Pipeline *pipeline, int64_t k) {
  const std::vector<ModelInput> &inputs = m.inputs();
  out = Score();
  batch = std::max<int64_t>(1, batch);
  std::vector<HostTensor> in;
  Task task = Task::None;
  int target = -1;
  int64_t correct = 0, inTopK = 0, counted = 0;
  double sumSq = 0, sumAbs = 0, sumY = 0, sumY2 = 0;
  for (int64_t start = 0; start < data.count; start += batch) {
    std::vector<int64_t> idx(std::min(data.count, start + batch) - start);
    std::iota(idx.begin(), idx.end(), start);
    if (Status s = batchInto(data, inputs, idx, in, pipeline, 0); !s)
      return s;
    std::vector<HostTensor> outputs;
    double loss = 0;
    if (Status s = m.evaluate(in, outputs, loss); !s)
      return s;
    out.loss += loss * static_cast<double>(idx.size());
    if (outputs.empty() || outputs[0].shape.empty() || outputs[0].shape[0] != static_cast<int64_t>(idx.size()))
      continue;
    const HostTensor &y = outputs[0];
    int64_t width = y.numel() / static_cast<int64_t>(idx.size());
    if (start == 0) {
      task = taskOf(inputs, data, width, target);
      if (task == Task::Labels || task == Task::OneHot) {
        out.classes = width;
        out.confusion.assign(static_cast<size_t>(width * width), 0);
      }
    }
    if (task == Task::None)
      continue;
    const Floats &t = in[target].data;
    for (size_t r = 0; r < idx.size(); ++r) {
      const float *row = y.data.data() + r * width;
      if (task == Task::Labels || task == Task::OneHot) {
        int64_t label = task == Task::Labels ? static_cast<int64_t>(t[r]) : argmax(t.data() + r * width, width);
        int64_t best = argmax(row, width);
        correct += best == label;
        // In the top k: fewer than k outputs above the label's (ties count
        // for the label, as torch.topk on distinct values would).
        int64_t above = 0;
        for (int64_t c = 0; c < width; ++c)
          above += row[c] > row[label];
        inTopK += above < k;
        ++out.confusion[static_cast<size_t>(label * width + best)];
      } else if (task == Task::Binary) {
        correct += (row[0] > 0.5f) == (t[r] > 0.5f);
      } else {
        for (int64_t c = 0; c < width; ++c) {
          double d = static_cast<double>(row[c]) - t[r * width + c];
          sumSq += d * d;
          sumAbs += std::abs(d);
          sumY += t[r * width + c];
          sumY2 += static_cast<double>(t[r * width + c]) * t[r * width + c];
        }
      }
      ++counted;
    }
  }
  out.loss /= static_cast<double>(std::max<int64_t>(1, data.count));
  if (counted == 0)
    return Status::ok();
  if (task == Task::Regression) {
    double n = static_cast<double>(counted) * static_cast<double>(data.fields[target].width);
    out.hasRegression = true;
    out.mse = sumSq / n;
    out.mae = sumAbs / n;
    double variance = sumY2 - sumY * sumY / n; // total sum of squares
    out.r2 = variance > 0 ? 1 - sumSq / variance : 0;
  } else {
    out.hasAccuracy = true;
    out.accuracy = static_cast<double>(correct) / static_cast<double>(counted);
    if (out.classes > k) {
      out.k = k;
      out.topK = static_cast<double>(inTopK) / static_cast<double>(counted);
    }
  }
  return Status::ok();
}
