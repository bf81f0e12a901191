//===- Data.h - datasets, CSV, shuffling and mini-batches -------*- C++ -*-===//
//
// A dataset is a list of fields, each holding `width` values per sample
// (MNIST: 784 pixels and 1 label). The training loop maps fields to model
// inputs. Epoch orders are seeded permutations, so the same seed gives the
// same batches; the last batch of an epoch may be smaller.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_DATA_H
#define NNC_RUNTIME_DATA_H

#include "runtime/Mnist.h"
#include "runtime/Status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nnc::rt {

/// Rows a field reads from elsewhere than memory it holds: a memory-mapped
/// file, or files decoded when a batch needs them. Large data sets stream
/// through these instead of being loaded whole.
class RowSource {
public:
  virtual ~RowSource();
  /// Row `r`'s values into `out`; an error names the file and the record.
  virtual Status copyRow(int64_t r, float *out) const = 0;
  virtual void prefetchRow(int64_t) const {}
  /// Bytes the source holds in memory (not what it maps).
  virtual uint64_t residentBytes() const { return 0; }
};

struct Field {
  std::string name;
  int64_t width = 1;
  bool integer = false;       // labels
  std::vector<float> values;  // count * width
  /// Instead of `values`, when not empty: bytes whose values are b / 255
  /// (MNIST's pixels, kept as stored: a quarter of the memory for every
  /// batch to gather from).
  std::vector<uint8_t> pixels;
  /// The file the values were read from, for errors.
  std::string source;
  /// Instead of `values` and `pixels`, when set: rows from a source, row r
  /// being the source's row `rows[r]` (all of them in order when `rows` is
  /// empty), so that subsets (a validation split, --limit) copy no data.
  std::shared_ptr<const RowSource> from;
  std::vector<int64_t> rows;

  /// Row `r`'s `width` values into `out`.
  Status copyRow(int64_t r, float *out) const;
  /// Whether the rows are bytes (pixels), held or streamed.
  bool isBytes() const { return !pixels.empty() || from != nullptr; }
  /// Starts loading row `r` into the cache.
  void prefetchRow(int64_t r) const;
};

struct Table {
  int64_t count = 0;
  std::vector<Field> fields;
  /// Per row, the line of the file it was read from (CSV); empty when rows
  /// are samples of a binary file, which errors name by index.
  std::vector<int64_t> lines;

  /// Where row `r` came from, for errors: "FILE:LINE" or "FILE: sample N".
  std::string where(const Field &f, int64_t r) const;
  /// The memory the table's values take.
  uint64_t bytes() const;
};

/// MNIST as two fields: "images" (784 values in [0, 1], held as the bytes
/// of the file, moved) and "labels".
Table fromMnist(Dataset &&mnist);

/// Reads a CSV file: an optional header line, then rows of numbers with the
/// same number of columns. Each column becomes a one-wide field. Every value
/// must be finite and within f32's range. Errors name the file, line and
/// column.
Status loadCsv(const std::string &path, Table &out);

/// The sample order of epoch `epoch`: a permutation seeded by (seed, epoch)
/// when `shuffle`, else 0..count-1.
std::vector<int64_t> epochOrder(int64_t count, uint64_t seed, int64_t epoch, bool shuffle);

/// Splits off the last `fraction` of a seeded permutation as validation data.
void splitValidation(const Table &all, double fraction, uint64_t seed, Table &train,
                     Table &validation);

/// The rows `indices` of a table.
Table gather(const Table &t, const std::vector<int64_t> &indices);

} // namespace nnc::rt

#endif // NNC_RUNTIME_DATA_H
