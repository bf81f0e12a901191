//===- Bench.cpp - nnc bench: where a training step spends its time -------===//
//
// Compiles a model's training step with per-kernel timers (each kernel is
// one op with the elementwise ops fused into it), runs it on synthetic
// batches and prints, per kernel, its time per step, share of the step,
// GFLOP/s and GB/s (estimated from the shapes), as a table, JSON or CSV.
// With --kernel SPEC the model is one op at a named shape (KernelSpec.h):
// its forward function alone, or with --backward its training step.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "compiler/codegen/cpu/Machine.h"
#include "compiler/codegen/cpu/Runner.h"
#include "compiler/codegen/cpu/Tiling.h"
#include "compiler/frontend/KernelSpec.h"

#include "runtime/Checkpoint.h"
#include "runtime/CudaDriver.h"
#include "runtime/CudaModel.h"
#include "runtime/Profile.h"
#include "runtime/Random.h"
#include "runtime/System.h"

#include "mlir/IR/Diagnostics.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <numeric>

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;

namespace {

struct Row {
  std::string ops, loc;
  double seconds = 0, flops = 0, bytes = 0; // per step; flops < 0: not estimated
  int64_t calls = 0;
  // A tiled kernel (Tiling.h): its choices' key and the alternatives.
  std::string key;
  std::vector<std::string> candidates;
};

std::string attrText(Attribute a) {
  std::string text;
  llvm::raw_string_ostream os(text);
  a.print(os);
  return text;
}

/// One synthetic batch of `batch` samples for the inputs of a training step.
std::vector<rt::HostTensor> syntheticInputs(const rt::FunctionDesc &step, int64_t batch) {
  std::vector<rt::HostTensor> inputs;
  uint64_t counter = 0;
  for (const rt::TensorDesc &t : step.args)
    if (t.role == "input")
      inputs.push_back(rt::syntheticTensor(t, batch, counter));
  return inputs;
}

/// Times the CPU code's kernels (per-kernel timers compiled in) over
/// `steps` steps: rows in the kernel table's order, with the FLOPs and bytes
/// estimated from the shapes. With `fixedWeights` (an inference), the
/// forward function keeps weight-only work across calls.
int benchCpu(Loaded &m, int64_t batch, int64_t steps, int64_t warmup, bool fuse, bool forward,
             std::vector<Row> &rows, double &wall, double &compileSeconds, bool fixedWeights = false) {
  // What one timed step runs: the training step, or the forward function.
  CpuCode cpu;
  std::unique_ptr<cpu::FunctionRunner> fwd;
  std::unique_ptr<rt::CompiledModel> model;
  std::vector<rt::HostTensor> inputs;
  std::function<rt::Status()> once;
  ArrayAttr table;
  if (forward) {
    auto runner = cpu::FunctionRunner::create(m.model, batch, /*profile=*/true, fuse, fixedWeights);
    if (failed(runner))
      return kUserError;
    fwd = std::move(*runner);
    once = [&] {
      fwd->run();
      return rt::Status::ok();
    };
    table = fwd->kernels();
    compileSeconds = fwd->compileSeconds();
  } else {
    if (int rc = compileCpu(m, /*profile=*/true, cpu, fuse))
      return rc;
    model = std::make_unique<rt::CompiledModel>(cpu.desc, 1, "cpu");
    if (rt::Status s = model->initialize(); !s)
      return userError(s.message());
    inputs = syntheticInputs(cpu.desc.trainStep, batch);
    once = [&] {
      double loss = 0;
      return model->step(inputs, loss);
    };
    table = cpu.kernels;
    compileSeconds = cpu.seconds;
  }
  for (int64_t i = 0; i < warmup; ++i)
    if (rt::Status s = once(); !s)
      return userError(s.message());
  rt::resetProfile();
  auto begin = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i)
    (void)once();
  wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() /
         static_cast<double>(steps);

  if (!table) {
    llvm::errs() << "nnc: error: the compiled step has no kernel table\n";
    return kUserError;
  }
  const std::vector<rt::KernelTime> &times = rt::profile();
  double b = static_cast<double>(batch);
  for (auto [id, a] : llvm::enumerate(table)) {
    auto d = cast<DictionaryAttr>(a);
    ArrayRef<int64_t> flops = cast<DenseI64ArrayAttr>(d.get("flops")).asArrayRef();
    ArrayRef<int64_t> bytes = cast<DenseI64ArrayAttr>(d.get("bytes")).asArrayRef();
    Row r{cast<StringAttr>(d.get("ops")).str(), cast<StringAttr>(d.get("loc")).str()};
    r.flops = static_cast<double>(flops[0]) * b + static_cast<double>(flops[1]);
    r.bytes = static_cast<double>(bytes[0]) * b + static_cast<double>(bytes[1]);
    if (id < times.size()) {
      r.seconds = times[id].seconds / static_cast<double>(steps);
      r.calls = times[id].calls;
    }
    if (auto key = d.getAs<StringAttr>("tiling_key")) {
      r.key = key.str();
      if (auto candidates = d.getAs<ArrayAttr>("tiling_candidates"))
        for (Attribute c : candidates)
          r.candidates.push_back(attrText(c));
    }
    rows.push_back(std::move(r));
  }
  return kOk;
}

/// Times the CUDA kernels on device 0, each launch of the training step
/// between events (CudaModel::profileStep): rows in launch order.
int benchCuda(const Args &args, Loaded &m, int64_t batch, int64_t steps, int64_t warmup, std::vector<Row> &rows,
              double &wall, double &compileSeconds, std::string &device) {
  rt::CudaDriver driver;
  CudaCode code;
  if (int rc = prepareCuda(args, m, driver, code))
    return rc;
  compileSeconds = code.seconds;
  device = driver.device;
  rt::CudaModel model(code.desc, 1, driver);
  if (rt::Status s = model.initialize(); !s)
    return userError(m.path + ": " + s.message());
  std::vector<rt::HostTensor> inputs = syntheticInputs(code.desc.trainStep, batch);
  double loss = 0;
  for (int64_t i = 0; i < warmup; ++i)
    if (rt::Status s = model.step(inputs, loss); !s)
      return userError(m.path + ": " + s.message());
  const std::vector<rt::CudaLaunch> &launches = code.desc.trainStep.cuda.launches;
  rows.assign(launches.size(), Row{});
  std::vector<double> seconds;
  auto begin = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i) {
    if (rt::Status s = model.profileStep(inputs, seconds); !s)
      return userError(m.path + ": " + s.message());
    for (size_t k = 0; k < launches.size(); ++k) {
      rows[k].seconds += seconds[k] / static_cast<double>(steps);
      ++rows[k].calls;
    }
  }
  wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() /
         static_cast<double>(steps);
  for (size_t k = 0; k < launches.size(); ++k) {
    // `what` is "ops at file:line:col".
    const std::string &w = launches[k].what;
    size_t at = w.rfind(" at ");
    rows[k].ops = launches[k].kernel + ": " + (at == std::string::npos ? w : w.substr(0, at));
    rows[k].loc = at == std::string::npos ? "" : w.substr(at + 4);
    rows[k].flops = rows[k].bytes = -1; // not estimated per launch
  }
  return kOk;
}

} // namespace

int nnc::driver::runBench(const Args &args) {
  const Command &c = command("bench");
  std::string spec = args.get("kernel");
  if (spec.empty()) {
    if (auto rc = needFile(c, args))
      return *rc;
  } else if (!args.positional.empty()) {
    return usageError("give a model FILE or --kernel SPEC, not both", &c);
  }
  int64_t batch = 0, steps = 20, warmup = 3, threads = 0;
  for (auto rc : {numberOption(args, c, "batch", batch), numberOption(args, c, "steps", steps),
                  numberOption(args, c, "warmup", warmup), numberOption(args, c, "threads", threads)})
    if (rc)
      return *rc;
  std::string format = args.get("format", "table");
  if (format != "table" && format != "json" && format != "csv")
    return usageError("--format must be table, json or csv, got '" + format + "'", &c);
  if (steps < 1 || warmup < 0 || batch < 0 || threads < 0)
    return usageError("--steps must be at least 1, and --batch, --warmup, --threads not negative", &c);
  if (threads > 0)
    if (std::string note = rt::setThreads(threads); !note.empty())
      llvm::errs() << "nnc: note: " << note << "\n";

  // A kernel spec becomes a one-op model in a scratch file.
  std::string path = spec.empty() ? args.positional[0] : "";
  if (!spec.empty()) {
    std::string error, source = kernelSource(spec, args.has("backward"), error);
    if (source.empty())
      return usageError("--kernel: " + error, &c);
    llvm::SmallString<128> dir;
    if (llvm::sys::fs::createUniqueDirectory("nnc-kernel", dir))
      return userError("cannot create a scratch directory for --kernel");
    path = (dir + "/" + spec.substr(0, spec.find(':')) + ".nn").str();
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    os << source;
    os.close();
    if (ec || os.has_error())
      return userError("cannot write '" + path + "'");
  } else if (args.has("backward")) {
    return usageError("--backward goes with --kernel (a model file's training step is its backward pass)", &c);
  }
  bool infer = args.has("infer");
  if (infer && !spec.empty())
    return usageError("--infer goes with a model FILE (--kernel times the op's forward function already)", &c);
  Loaded m;
  int loaded = load(path, std::nullopt, m, /*train=*/(spec.empty() && !infer) || args.has("backward"));
  if (!spec.empty()) {
    llvm::sys::fs::remove(path);
    llvm::sys::fs::remove(llvm::sys::path::parent_path(path));
  }
  if (loaded)
    return loaded;
  SourceMgrDiagnosticHandler handler(m.session.sourceMgr, &m.session.ctx);
  bool fuse = !args.has("no-fusion");
  bool forward = (!spec.empty() && !args.has("backward")) || infer;
  if (batch == 0)
    batch = forward ? 1 : m.setting("batch", 32);
  std::string target = args.get("target", "cpu");
  if (target != "cpu" && target != "cuda")
    return usageError("--target must be cpu or cuda, got '" + target + "'", &c);
  if (target == "cuda" && forward)
    return usageError("--target=cuda times training steps: with --kernel, add --backward; --infer is for the CPU", &c);
  if (target == "cuda" && !fuse)
    return usageError("--no-fusion goes with --target=cpu", &c);
  std::vector<Row> rows;
  double wall = 0, compileSeconds = 0;
  std::string device; // where the CUDA kernels ran
  if (target == "cuda") {
    if (int rc = benchCuda(args, m, batch, steps, warmup, rows, wall, compileSeconds, device))
      return rc;
  } else if (int rc = benchCpu(m, batch, steps, warmup, fuse, forward, rows, wall, compileSeconds, infer)) {
    return rc;
  }
  double total = 0;
  for (const Row &r : rows)
    total += r.seconds;
  std::vector<size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t x, size_t y) { return rows[x].seconds > rows[y].seconds; });

  llvm::raw_ostream &os = llvm::outs();
  auto rate = [](double amount, double seconds) { return seconds > 0 ? amount / seconds / 1e9 : 0.0; };
  if (format == "json") {
    os << "{\"model\": " << rt::jsonString(m.model.getName().str());
    if (!spec.empty())
      os << ", \"kernel\": " << rt::jsonString(spec) << ", \"backward\": " << (forward ? "false" : "true");
    if (infer)
      os << ", \"infer\": true";
    os << ", \"target\": " << rt::jsonString(target) << ", \"cpu\": " << rt::jsonString(cpu::host().describe());
    if (!device.empty())
      os << ", \"device\": " << rt::jsonString(device);
    os << ", \"batch\": " << batch << ", \"steps\": " << steps
       << ", \"compile_seconds\": " << llvm::format("%.4f", compileSeconds)
       << ", \"step_seconds\": " << llvm::format("%.6g", wall) << ", \"kernels\": [";
    for (auto [k, i] : llvm::enumerate(order)) {
      const Row &r = rows[i];
      os << (k ? ", " : "") << "{\"id\": " << i << ", \"ops\": " << rt::jsonString(r.ops)
         << ", \"loc\": " << rt::jsonString(r.loc) << llvm::format(", \"seconds\": %.6g", r.seconds)
         << llvm::format(", \"share\": %.4f", total > 0 ? r.seconds / total : 0.0);
      if (r.flops >= 0)
        os << llvm::format(", \"flops\": %.0f, \"bytes\": %.0f", r.flops, r.bytes)
           << llvm::format(", \"gflops_per_second\": %.3f, \"gbytes_per_second\": %.3f",
                           rate(r.flops, r.seconds), rate(r.bytes, r.seconds));
      os << "}";
    }
    os << "]}\n";
    return kOk;
  }
  if (format == "csv") {
    os << "id,ops,loc,seconds,share,flops,bytes,gflops_per_second,gbytes_per_second\n";
    for (size_t i : order) {
      const Row &r = rows[i];
      os << i << "," << r.ops << "," << r.loc
         << llvm::format(",%.6g,%.4f", r.seconds, total > 0 ? r.seconds / total : 0.0);
      if (r.flops >= 0)
        os << llvm::format(",%.0f,%.0f,%.3f,%.3f\n", r.flops, r.bytes, rate(r.flops, r.seconds),
                           rate(r.bytes, r.seconds));
      else
        os << ",,,,\n"; // not estimated
    }
    return kOk;
  }
  std::string on = device.empty() ? "" : " on " + device;
  if (infer)
    os << llvm::format("%s: inference at batch %lld: %.3f ms (%zu kernels; compiled in %.2f s)\n",
                       m.model.getName().str().c_str(), static_cast<long long>(batch), wall * 1e3, rows.size(),
                       compileSeconds);
  else if (spec.empty())
    os << llvm::format("%s: training step at batch %lld%s: %.3f ms (%zu %s; compiled in %.2f s)\n",
                       m.model.getName().str().c_str(), static_cast<long long>(batch), on.c_str(), wall * 1e3,
                       rows.size(), device.empty() ? "kernels" : "launches", compileSeconds);
  else
    os << llvm::format("%s%s: %.3f ms (%zu kernels; compiled in %.2f s)\n", spec.c_str(),
                       forward ? "" : " forward and backward", wall * 1e3, rows.size(), compileSeconds);
  // The machine beside the figures (blocking derives from it).
  os << "  cpu: " << cpu::host().describe() << "\n";
  os << "  id   ms/step  share   GFLOP/s     GB/s  kernel (fused ops)           location\n";
  for (size_t i : order) {
    const Row &r = rows[i];
    std::string ops = r.ops.size() > 28 ? r.ops.substr(0, 25) + "..." : r.ops;
    if (r.flops >= 0)
      os << llvm::format("%4zu %9.4f %5.1f%% %9.2f %8.2f  %-28s %s\n", i, r.seconds * 1e3,
                         total > 0 ? 100 * r.seconds / total : 0.0, rate(r.flops, r.seconds),
                         rate(r.bytes, r.seconds), ops.c_str(), r.loc.c_str());
    else
      os << llvm::format("%4zu %9.4f %5.1f%% %9s %8s  %-28s %s\n", i, r.seconds * 1e3,
                         total > 0 ? 100 * r.seconds / total : 0.0, static_cast<const char *>("-"),
                         static_cast<const char *>("-"), ops.c_str(), r.loc.c_str());
  }
  return kOk;
}

int nnc::driver::runTune(const Args &args) {
  const Command &c = command("tune");
  if (auto rc = needFile(c, args))
    return *rc;
  int64_t batch = 0, steps = 3, warmup = 1, threads = 0;
  for (auto rc : {numberOption(args, c, "batch", batch), numberOption(args, c, "steps", steps),
                  numberOption(args, c, "warmup", warmup), numberOption(args, c, "threads", threads)})
    if (rc)
      return *rc;
  if (steps < 1)
    return usageError("--steps must be at least 1", &c);
  if (threads > 0)
    if (std::string note = rt::setThreads(threads); !note.empty())
      llvm::errs() << "nnc: note: " << note << "\n";
  if (cpu::tuningPath().empty())
    return userError("the nnc cache is off (NNC_CACHE_DIR=off): tuned choices would have nowhere to go");
  const std::string path = args.positional[0];
  // Round r times every tiled kernel with its r-th candidate (round 0: the
  // defaults, whatever an earlier tuning chose), all in one compiled step,
  // each kernel timed on its own (nnc bench's per-kernel timers).
  std::map<std::string, std::vector<std::string>> candidates;
  std::map<std::string, std::vector<double>> seconds;
  std::map<std::string, int64_t> kernels;
  llvm::errs() << "nnc: tuning " << path << " on " << cpu::host().describe() << "\n";
  for (size_t round = 0;; ++round) {
    cpu::clearTunedTilings();
    bool any = round == 0;
    for (auto &[key, list] : candidates)
      if (round < list.size()) {
        cpu::setTunedTiling(key, list[round]);
        any = true;
      }
    if (!any)
      break;
    Loaded m;
    if (int rc = load(path, std::nullopt, m, /*train=*/true))
      return rc;
    SourceMgrDiagnosticHandler handler(m.session.sourceMgr, &m.session.ctx);
    if (batch == 0)
      batch = m.setting("batch", 32);
    std::vector<Row> rows;
    double wall = 0, compileSeconds = 0;
    if (int rc = benchCpu(m, batch, steps, warmup, /*fuse=*/true, /*forward=*/false, rows, wall, compileSeconds))
      return rc;
    std::map<std::string, double> sum;
    for (const Row &r : rows)
      if (!r.key.empty()) {
        sum[r.key] += r.seconds;
        if (round == 0) {
          candidates.emplace(r.key, r.candidates);
          ++kernels[r.key];
        }
      }
    for (auto &[key, t] : sum) {
      if (round > 0 && round >= candidates[key].size())
        continue; // the default again: timed in round 0
      std::vector<double> &list = seconds[key];
      list.resize(round + 1, -1);
      list[round] = t;
    }
    llvm::errs() << "nnc: round " << round + 1 << ": step " << llvm::format("%.1f", wall * 1e3) << " ms (compiled in "
                 << llvm::format("%.1f", compileSeconds) << " s)\n";
  }
  // The fastest candidate per key, kept over the file's other entries.
  cpu::clearTunedTilings();
  cpu::reloadTunedTilings();
  llvm::raw_ostream &os = llvm::outs();
  os << "cpu: " << cpu::host().describe() << "\n";
  os << "  kernels  default ms  tuned ms  speed-up  choice  (op and shapes)\n";
  double before = 0, after = 0;
  for (auto &[key, list] : seconds) {
    size_t best = 0;
    for (size_t r = 1; r < list.size(); ++r)
      if (list[r] >= 0 && list[r] < list[best])
        best = r;
    before += list[0];
    after += list[best];
    const std::vector<std::string> &choices = candidates[key];
    if (best < choices.size())
      cpu::setTunedTiling(key, choices[best]);
    os << llvm::format("  %7lld  %10.3f  %8.3f  %7.2fx  ", static_cast<long long>(kernels[key]), list[0] * 1e3,
                       list[best] * 1e3, list[best] > 0 ? list[0] / list[best] : 1.0)
       << (best < choices.size() ? choices[best] : "") << "  " << key << "\n";
  }
  os << llvm::format("tiled kernels: %.3f -> %.3f ms a step\n", before * 1e3, after * 1e3);
  std::string error;
  if (!cpu::saveTunedTilings(error))
    return userError(error);
  os << "tuned choices kept in " << cpu::tuningPath() << "\n";
  return kOk;
}
