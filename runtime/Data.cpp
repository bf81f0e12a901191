//===- Data.cpp - datasets, CSV, shuffling and mini-batches ---------------===//

#include "runtime/Data.h"
#include "runtime/Random.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <fstream>
#include <numeric>
#include <sstream>

namespace nnc::rt {

RowSource::~RowSource() = default;

Status Field::copyRow(int64_t r, float *out) const {
  if (from)
    return from->copyRow(rows.empty() ? r : rows[static_cast<size_t>(r)], out);
  if (pixels.empty()) {
    std::copy_n(values.data() + r * width, width, out);
    return Status::ok();
  }
  const uint8_t *p = pixels.data() + r * width;
  for (int64_t i = 0; i < width; ++i)
    out[i] = pixelValue(p[i]);
  return Status::ok();
}

void Field::prefetchRow(int64_t r) const {
  if (from) {
    from->prefetchRow(rows.empty() ? r : rows[static_cast<size_t>(r)]);
    return;
  }
  const char *p = pixels.empty() ? reinterpret_cast<const char *>(values.data() + r * width)
                                 : reinterpret_cast<const char *>(pixels.data() + r * width);
  size_t bytes = static_cast<size_t>(width) * (pixels.empty() ? sizeof(float) : 1);
  for (size_t at = 0; at < bytes; at += 64)
    __builtin_prefetch(p + at);
}

std::string Table::where(const Field &f, int64_t r) const {
  if (static_cast<size_t>(r) < lines.size())
    return f.source + ":" + std::to_string(lines[r]);
  return f.source + ": sample " + std::to_string(r + 1);
}

uint64_t Table::bytes() const {
  uint64_t b = 0;
  for (const Field &f : fields)
    b += f.values.size() * sizeof(float) + f.pixels.size() + (f.from ? f.from->residentBytes() : 0);
  return b;
}

Table fromMnist(Dataset &&mnist) {
  Table t;
  t.count = mnist.count;
  Field images{"images", mnist.features, false, {}};
  images.pixels = std::move(mnist.pixels);
  images.source = mnist.imagesPath;
  t.fields.push_back(std::move(images));
  Field labels{"labels", 1, true, {}};
  labels.source = mnist.labelsPath;
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

/// Parses one cell; on failure `why` says what is wrong with it.
static bool parseNumber(std::string cell, float &out, std::string *why = nullptr) {
  size_t b = cell.find_first_not_of(" \t\r"), e = cell.find_last_not_of(" \t\r");
  if (b == std::string::npos) {
    if (why)
      *why = "an empty cell is not a number";
    return false;
  }
  cell = cell.substr(b, e - b + 1);
  char *end = nullptr;
  errno = 0;
  double v = std::strtod(cell.c_str(), &end);
  if (*end != '\0') {
    if (why)
      *why = "'" + cell + "' is not a number";
    return false;
  }
  if (!std::isfinite(v)) {
    if (why)
      *why = "'" + cell + "' is not finite";
    return false;
  }
  if (std::fabs(v) > std::numeric_limits<float>::max()) {
    if (why)
      *why = "'" + cell + "' is beyond f32's range (about 3.4e38)";
    return false;
  }
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
  std::vector<int64_t> lines;
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
    std::string why;
    for (size_t i = 0; i < cells.size(); ++i)
      if (!parseNumber(cells[i], row[i], &why))
        return Status::error(path + ":" + std::to_string(lineNo) + ":" + std::to_string(i + 1) +
                             ": " + why);
    rows.push_back(std::move(row));
    lines.push_back(lineNo);
  }
  if (rows.empty())
    return Status::error(path + ": no data rows");
  out = Table();
  out.count = static_cast<int64_t>(rows.size());
  out.lines = std::move(lines);
  for (size_t c = 0; c < columns; ++c) {
    Field f{c < header.size() ? header[c] : "column " + std::to_string(c + 1), 1, false, {}};
    f.source = path;
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
  if (!t.lines.empty())
    for (int64_t i : indices)
      out.lines.push_back(t.lines[i]);
  for (const Field &f : t.fields) {
    Field g{f.name, f.width, f.integer, {}};
    g.source = f.source;
    if (f.from) { // a subset of the source's rows: indices, no data
      g.from = f.from;
      for (int64_t i : indices)
        g.rows.push_back(f.rows.empty() ? i : f.rows[static_cast<size_t>(i)]);
      out.fields.push_back(std::move(g));
      continue;
    }
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
