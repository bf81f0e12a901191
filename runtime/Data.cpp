//===- Data.cpp - datasets, CSV, shuffling and mini-batches ---------------===//

#include "runtime/Data.h"
#include "runtime/Random.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

namespace nnc::rt {

void Field::copyRow(int64_t r, float *out) const {
  if (pixels.empty()) {
    std::copy_n(values.data() + r * width, width, out);
    return;
  }
  const uint8_t *p = pixels.data() + r * width;
  for (int64_t i = 0; i < width; ++i)
    out[i] = pixelValue(p[i]);
}

void Field::prefetchRow(int64_t r) const {
  const char *p = pixels.empty() ? reinterpret_cast<const char *>(values.data() + r * width)
                                 : reinterpret_cast<const char *>(pixels.data() + r * width);
  size_t bytes = static_cast<size_t>(width) * (pixels.empty() ? sizeof(float) : 1);
  for (size_t at = 0; at < bytes; at += 64)
    __builtin_prefetch(p + at);
}

Table fromMnist(Dataset &&mnist) {
  Table t;
  t.count = mnist.count;
  Field images{"images", mnist.features, false, {}};
  images.pixels = std::move(mnist.pixels);
  t.fields.push_back(std::move(images));
  Field labels{"labels", 1, true, {}};
  labels.values.assign(mnist.labels.begin(), mnist.labels.end());
  t.fields.push_back(std::move(labels));
  return t;
}

static std::vector<std::string> splitLine(const std::string &line) {
  std::vector<std::string> cells;
  std::stringstream ss(line);
  std::string cell;
  while (std::getline(ss, cell, ','))
    cells.push_back(cell);
  if (!line.empty() && line.back() == ',')
    cells.emplace_back();
  return cells;
}

static bool parseNumber(std::string cell, float &out) {
  size_t b = cell.find_first_not_of(" \t\r"), e = cell.find_last_not_of(" \t\r");
  if (b == std::string::npos)
    return false;
  cell = cell.substr(b, e - b + 1);
  char *end = nullptr;
  double v = std::strtod(cell.c_str(), &end);
  if (*end != '\0' || !std::isfinite(v))
    return false;
  out = static_cast<float>(v);
  return true;
}

Status loadCsv(const std::string &path, Table &out) {
  std::ifstream in(path);
  if (!in)
    return Status::error(path + ": cannot open the file");
  std::string line;
  std::vector<std::vector<float>> rows;
  std::vector<std::string> header;
  size_t columns = 0;
  int64_t lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    std::vector<std::string> cells = splitLine(line);
    std::vector<float> row(cells.size());
    bool numeric = true;
    for (size_t i = 0; i < cells.size() && numeric; ++i)
      numeric = parseNumber(cells[i], row[i]);
    if (!numeric && rows.empty() && header.empty()) {
      header = cells; // the first non-numeric line names the columns
      columns = cells.size();
      continue;
    }
    if (columns == 0)
      columns = cells.size();
    if (cells.size() != columns)
      return Status::error(path + ":" + std::to_string(lineNo) + ": " +
                           std::to_string(cells.size()) + " columns, expected " +
                           std::to_string(columns));
    for (size_t i = 0; i < cells.size(); ++i)
      if (!parseNumber(cells[i], row[i]))
        return Status::error(path + ":" + std::to_string(lineNo) + ":" + std::to_string(i + 1) +
                             ": '" + cells[i] + "' is not a number");
    rows.push_back(std::move(row));
  }
  if (rows.empty())
    return Status::error(path + ": no data rows");
  out = Table();
  out.count = static_cast<int64_t>(rows.size());
  for (size_t c = 0; c < columns; ++c) {
    Field f{c < header.size() ? header[c] : "column " + std::to_string(c + 1), 1, false, {}};
    for (const auto &r : rows)
      f.values.push_back(r[c]);
    out.fields.push_back(std::move(f));
  }
  return Status::ok();
}

std::vector<int64_t> epochOrder(int64_t count, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle)
    return order;
  uint64_t stream = mix64(0x5eed0000ULL + static_cast<uint64_t>(epoch));
  for (int64_t i = count - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(randomBits(seed, stream, i) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

Table gather(const Table &t, const std::vector<int64_t> &indices) {
  Table out;
  out.count = static_cast<int64_t>(indices.size());
  for (const Field &f : t.fields) {
    Field g{f.name, f.width, f.integer, {}};
    auto pick = [&](const auto &from, auto &to) {
      to.reserve(indices.size() * f.width);
      for (int64_t i : indices)
        to.insert(to.end(), from.begin() + i * f.width, from.begin() + (i + 1) * f.width);
    };
    if (f.pixels.empty())
      pick(f.values, g.values);
    else
      pick(f.pixels, g.pixels);
    out.fields.push_back(std::move(g));
  }
  return out;
}

void splitValidation(const Table &all, double fraction, uint64_t seed, Table &train,
                     Table &validation) {
  std::vector<int64_t> order = epochOrder(all.count, seed, -1, true);
  int64_t held = static_cast<int64_t>(std::floor(fraction * static_cast<double>(all.count)));
  std::vector<int64_t> a(order.begin(), order.end() - held), b(order.end() - held, order.end());
  train = gather(all, a);
  validation = gather(all, b);
}

} // namespace nnc::rt
