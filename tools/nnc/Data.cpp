//===- Data.cpp - nnc data: the samples training sees ----------------------===//
//
// Writes the first samples of a data set, after the train section's
// transforms as a given epoch draws them, to an .npz file: to look at an
// augmentation before training with it, and to check it against another
// library's.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "runtime/Sources.h"
#include "runtime/Training.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace nnc;
using namespace nnc::driver;

int nnc::driver::runData(const Args &args) {
  const Command &c = command("data");
  if (auto rc = needFile(c, args))
    return *rc;
  if (!args.has("o"))
    return usageError("data needs -o FILE.npz", &c);
  int64_t epoch = 1, count = 16, seed = -1;
  for (auto rc : {numberOption(args, c, "epoch", epoch, 0), numberOption(args, c, "count", count, 1),
                  numberOption(args, c, "seed", seed, 0)})
    if (rc)
      return *rc;
  std::string split = args.get("split", "train");
  if (split != "train" && split != "test")
    return usageError("--split must be train or test", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  if (seed < 0)
    seed = m.setting("seed", 0);
  rt::DataSource source;
  if (int rc = dataSource(m, args, source))
    return rc;
  std::vector<rt::ModelInput> inputs = modelInputs(m.inputs);
  rt::BoundData data;
  if (rt::Status s = rt::loadData(source, inputs, m.real("validation", 0), static_cast<uint64_t>(seed), data); !s)
    return userError(s.message());
  std::vector<rt::Call> transforms;
  if (rt::Status s = rt::parseCallList(m.text("transform"), transforms); !s)
    return userError(s.message());
  if (rt::Status s = rt::setTransforms(data, inputs, transforms, static_cast<uint64_t>(seed)); !s)
    return userError(m.path + ": " + s.message());
  if (split == "test" && !data.hasTest)
    return userError(source.path + ": the data has no test set (give --test, or validation in the train section)");
  const rt::Table &t = split == "test" ? data.test : data.train;
  std::vector<int64_t> rows(static_cast<size_t>(std::min(count, t.count)));
  std::iota(rows.begin(), rows.end(), 0);
  std::vector<rt::HostTensor> batch;
  // Evaluation data gets the deterministic transforms only (epoch 0).
  if (rt::Status s = rt::batchInto(t, inputs, rows, batch, &data.pipeline, split == "test" ? 0 : epoch); !s)
    return userError(s.message());
  if (rt::Status s = rt::saveNpz(args.get("o"), batch); !s)
    return userError(s.message());
  for (const rt::HostTensor &x : batch) {
    auto [lo, hi] = std::minmax_element(x.data.begin(), x.data.end());
    double mean = std::accumulate(x.data.begin(), x.data.end(), 0.0) / std::max<size_t>(1, x.data.size());
    llvm::outs() << llvm::format("%s: %lld samples, min %.4g, max %.4g, mean %.4g\n", x.name.c_str(),
                                 static_cast<long long>(rows.size()), x.data.empty() ? 0.0 : *lo,
                                 x.data.empty() ? 0.0 : *hi, mean);
  }
  llvm::outs() << "wrote " << args.get("o") << "\n";
  return kOk;
}
