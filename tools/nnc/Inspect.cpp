//===- Inspect.cpp - nnc summary, inspect and plot -------------------------===//
//
// Looking at models, weights and runs: a per-layer table of a model (as
// Keras' model.summary() or torchinfo print one), the tensors of a
// safetensors file with statistics, and training curves from a metrics file
// drawn by gnuplot.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/Driver.h"

#include "dialects/nn/NNOps.h"
#include "runtime/Checkpoint.h"
#include "runtime/System.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;

namespace {

/// Elements of a type with the batch axis (dynamic) at 1: per sample.
int64_t perSample(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r)
    return 0;
  int64_t n = 1;
  for (int64_t d : r.getShape())
    n *= ShapedType::isDynamic(d) ? 1 : d;
  return n;
}

std::string shapeText(Type t) {
  auto r = dyn_cast<RankedTensorType>(t);
  if (!r)
    return "?";
  std::string s = "[";
  for (int64_t i = 0; i < r.getRank(); ++i)
    s += (i ? ", " : "") + (r.isDynamicDim(i) ? std::string("B") : std::to_string(r.getDimSize(i)));
  return s + "]";
}

/// Floating-point operations per sample of one op: products and
/// convolutions count a multiply and an add per term, the rest one
/// operation per element they produce.
double flopsOf(Operation *op) {
  if (op->getNumResults() == 0)
    return 0;
  double out = static_cast<double>(perSample(op->getResult(0).getType()));
  if (auto mm = dyn_cast<nn::MatmulOp>(op)) {
    auto lhs = cast<RankedTensorType>(mm->getOperand(0).getType());
    return 2 * out * static_cast<double>(lhs.getDimSize(lhs.getRank() - 1));
  }
  if (auto conv = dyn_cast<nn::Conv2dOp>(op)) {
    auto w = cast<RankedTensorType>(conv->getOperand(1).getType()); // [O, C/groups, KH, KW]
    return 2 * out * static_cast<double>(w.getNumElements() / w.getDimSize(0));
  }
  return out;
}

struct Row {
  std::string name, ops, shape;
  int64_t params = 0;
  double flops = 0;
  unsigned line = 0;
};

std::string human(double v) {
  const char *units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return llvm::formatv("{0:F2}{1}", v, units[u]).str();
}

} // namespace

int nnc::driver::runSummary(const Args &args) {
  const Command &c = command("summary");
  if (auto rc = needFile(c, args))
    return *rc;
  Session s;
  if (!s.open(args.positional[0]))
    return kUserError;
  auto module = s.load(args.positional[0]);
  if (!module)
    return kUserError;
  auto fn = *module->getOps<func::FuncOp>().begin();
  // A layer is the run of ops that read the same parameters (`h.w`, `h.b`:
  // layer `h`); an op without parameters is a row of its own.
  auto layerOf = [&](Operation *op) -> std::string {
    for (Value v : op->getOperands())
      if (auto arg = dyn_cast<BlockArgument>(v)) {
        auto role = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), nn::attr::kRole);
        auto name = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), nn::attr::kName);
        if (role && role.getValue() != "input" && name) {
          StringRef n = name.getValue();
          return n.contains('.') ? n.rsplit('.').first.str() : n.str();
        }
      }
    return "";
  };
  std::vector<Row> rows;
  std::set<unsigned> counted; // parameters already in a row
  int64_t trainable = 0, fixed = 0, activations = 0;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    auto role = fn.getArgAttrOfType<StringAttr>(i, nn::attr::kRole);
    int64_t n = perSample(fn.getArgument(i).getType());
    if (!role || role.getValue() == "input")
      continue;
    (role.getValue() == "param" ? trainable : fixed) += n;
  }
  for (Operation &op : fn.front().without_terminator()) {
    if (isa<nn::ConstantOp>(op))
      continue;
    std::string layer = layerOf(&op);
    unsigned line = 0;
    if (auto loc = dyn_cast<FileLineColLoc>(op.getLoc()))
      line = loc.getLine();
    bool merge = !rows.empty() && !layer.empty() && rows.back().name == layer;
    if (!merge) {
      rows.push_back(Row{layer, "", "", 0, 0, line});
    }
    Row &r = rows.back();
    r.ops += (r.ops.empty() ? "" : "+") + op.getName().stripDialect().str();
    r.shape = op.getNumResults() ? shapeText(op.getResult(0).getType()) : "";
    r.flops += flopsOf(&op);
    for (Value v : op.getOperands())
      if (auto arg = dyn_cast<BlockArgument>(v)) {
        auto role = fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), nn::attr::kRole);
        if (role && role.getValue() != "input" && counted.insert(arg.getArgNumber()).second)
          r.params += perSample(arg.getType());
      }
    for (Value v : op.getResults())
      activations += perSample(v.getType());
  }
  std::string title = "Model: " + fn.getName().str();
  llvm::outs() << title << "\n";
  llvm::outs() << llvm::format("%-22s %-26s %-20s %12s %14s\n", static_cast<const char *>("Layer"),
                               static_cast<const char *>("Op"), static_cast<const char *>("Output shape"),
                               static_cast<const char *>("Param #"), static_cast<const char *>("FLOPs/sample"));
  llvm::outs() << std::string(98, '=') << "\n";
  double flops = 0;
  for (const Row &r : rows) {
    std::string name = r.name.empty() ? "(line " + std::to_string(r.line) + ")" : r.name;
    std::string ops = r.ops.size() > 26 ? r.ops.substr(0, 23) + "..." : r.ops;
    llvm::outs() << llvm::format("%-22s %-26s %-20s %12lld %14s\n", name.c_str(), ops.c_str(), r.shape.c_str(),
                                 static_cast<long long>(r.params), human(r.flops).c_str());
    flops += r.flops;
  }
  llvm::outs() << std::string(98, '=') << "\n";
  llvm::outs() << llvm::format("Total params: %lld (%s)\n", static_cast<long long>(trainable + fixed),
                               rt::formatBytes(static_cast<uint64_t>((trainable + fixed) * 4)).c_str());
  llvm::outs() << llvm::format("Trainable params: %lld\nNon-trainable params: %lld\n",
                               static_cast<long long>(trainable), static_cast<long long>(fixed));
  llvm::outs() << "FLOPs per sample (forward): " << human(flops) << "\n";
  llvm::outs() << "Activations per sample (forward): "
               << rt::formatBytes(static_cast<uint64_t>(activations * 4)) << "\n";
  return kOk;
}

int nnc::driver::runInspect(const Args &args) {
  const Command &c = command("inspect");
  if (auto rc = needFile(c, args))
    return *rc;
  std::vector<rt::HostTensor> tensors;
  rt::Metadata meta;
  std::vector<std::string> others;
  if (rt::Status s = rt::loadCheckpoint(args.positional[0], tensors, meta, &others); !s)
    return userError(s.message());
  int64_t total = 0;
  llvm::outs() << "tensor" << std::string(31, ' ') << "dtype shape" << std::string(14, ' ')
               << "      values         min         max        mean         std\n";
  for (const rt::HostTensor &t : tensors) {
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i)
      shape += (i ? ", " : "") + std::to_string(t.shape[i]);
    shape += "]";
    double lo = 0, hi = 0, sum = 0, sq = 0;
    if (!t.data.empty()) {
      auto [a, b] = std::minmax_element(t.data.begin(), t.data.end());
      lo = *a;
      hi = *b;
    }
    for (float v : t.data)
      sum += v;
    double mean = t.data.empty() ? 0 : sum / static_cast<double>(t.data.size());
    for (float v : t.data)
      sq += (v - mean) * (v - mean);
    double sd = t.data.size() > 1 ? std::sqrt(sq / static_cast<double>(t.data.size() - 1)) : 0;
    llvm::outs() << llvm::format("%-36s %-5s %-18s %12lld %11.4g %11.4g %11.4g %11.4g\n", t.name.c_str(),
                                 static_cast<const char *>(t.integer ? "I32" : "F32"), shape.c_str(), static_cast<long long>(t.numel()), lo,
                                 hi, mean, sd);
    total += t.numel();
  }
  for (const std::string &o : others)
    llvm::outs() << o << ": not read\n";
  llvm::outs() << tensors.size() << " tensors, " << total << " values\n";
  for (const auto &[k, v] : meta)
    if (k != "nnc.checksum")
      llvm::outs() << "metadata " << k << " = " << v << "\n";
  return kOk;
}

namespace {

/// One run's curves from a metrics file.
struct Curves {
  std::vector<double> epoch, train, eval, accuracy;
  std::string split = "eval";
};

/// Reads a metrics file (CSV with a header, or JSON lines): the last run's
/// rows.
bool readMetrics(const std::string &path, Curves &out, std::string &error) {
  std::ifstream in(path);
  if (!in) {
    error = path + ": cannot open the file";
    return false;
  }
  std::string line;
  std::vector<std::string> header;
  std::string run;
  bool json = path.size() > 5 && (path.substr(path.size() - 5) == ".json" || path.substr(path.size() - 6) == ".jsonl");
  auto number = [](const std::string &s, double &v) {
    char *end = nullptr;
    v = std::strtod(s.c_str(), &end);
    return !s.empty() && end && *end == '\0';
  };
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    std::map<std::string, std::string> row;
    if (json) {
      // Flat objects of numbers and strings, as nnc writes them.
      if (line.find("\"settings\"") != std::string::npos || line.empty())
        continue;
      size_t at = 0;
      while ((at = line.find('"', at)) != std::string::npos) {
        size_t e = line.find('"', at + 1);
        size_t colon = line.find(':', e);
        if (e == std::string::npos || colon == std::string::npos)
          break;
        std::string key = line.substr(at + 1, e - at - 1);
        size_t v = line.find_first_not_of(' ', colon + 1);
        size_t ve = line[v] == '"' ? line.find('"', v + 1) + 1 : line.find_first_of(",}", v);
        std::string value = line.substr(v, ve - v);
        if (!value.empty() && value[0] == '"')
          value = value.substr(1, value.size() - 2);
        row[key] = value;
        at = ve;
      }
    } else {
      std::vector<std::string> cells;
      std::stringstream ss(line);
      std::string cell;
      while (std::getline(ss, cell, ','))
        cells.push_back(cell);
      if (header.empty() || cells == header) {
        header = cells;
        continue;
      }
      for (size_t i = 0; i < cells.size() && i < header.size(); ++i)
        row[header[i]] = cells[i];
    }
    double e, t, v, a;
    if (!row.count("epoch") || !number(row["epoch"], e)) {
      error = path + ":" + std::to_string(lineNo) + ": not a metrics row (no epoch)";
      return false;
    }
    if (row["run"] != run) { // a new run: its curves replace the last's
      out = Curves();
      run = row["run"];
    }
    std::string evalKey;
    for (const auto &[k, value] : row)
      if (k.size() > 5 && k.substr(k.size() - 5) == "_loss" && k != "train_loss")
        evalKey = k.substr(0, k.size() - 5);
    if (row.count("eval_set"))
      out.split = row["eval_set"];
    else if (!evalKey.empty())
      out.split = evalKey;
    out.epoch.push_back(e);
    out.train.push_back(number(row["train_loss"], t) ? t : NAN);
    out.eval.push_back(number(row[evalKey + "_loss"], v) ? v : NAN);
    out.accuracy.push_back(number(row[evalKey + "_accuracy"], a) ? a : NAN);
  }
  if (out.epoch.empty()) {
    error = path + ": no epochs to plot";
    return false;
  }
  return true;
}

} // namespace

int nnc::driver::runPlot(const Args &args) {
  const Command &c = command("plot");
  if (auto rc = needFile(c, args))
    return *rc;
  std::string out = args.get("o");
  if (out.empty())
    return usageError("plot needs -o FILE.png or FILE.svg", &c);
  bool svg = llvm::StringRef(out).ends_with(".svg");
  if (!svg && !llvm::StringRef(out).ends_with(".png"))
    return usageError("-o must name a .png or .svg file", &c);
  Curves curves;
  std::string error;
  if (!readMetrics(args.positional[0], curves, error))
    return userError(error);
  auto gnuplot = llvm::sys::findProgramByName("gnuplot");
  if (!gnuplot)
    return userError("gnuplot is not installed (scripts/setup.sh installs it: Debian's gnuplot-nox)");
  // The data and the script in a scratch directory; the picture is written
  // aside and renamed, so a failure leaves no half-written file.
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("nnc-plot", dir))
    return userError("cannot create a temporary directory");
  std::string data = (dir + "/curves.dat").str(), script = (dir + "/curves.gp").str(), tmp = out + ".tmp";
  {
    std::ofstream d(data);
    for (size_t i = 0; i < curves.epoch.size(); ++i)
      d << curves.epoch[i] << " " << curves.train[i] << " " << curves.eval[i] << " " << curves.accuracy[i] << "\n";
  }
  bool accuracy = std::any_of(curves.accuracy.begin(), curves.accuracy.end(), [](double a) { return !std::isnan(a); });
  {
    std::ofstream g(script);
    g << (svg ? "set terminal svg size 900,420 dynamic\n" : "set terminal png size 900,420\n");
    g << "set output '" << tmp << "'\nset datafile missing 'nan'\nset key top right\nset grid\n";
    g << "set xlabel 'epoch'\n";
    if (accuracy)
      g << "set multiplot layout 1,2\n";
    g << "set title 'loss'\nplot '" << data << "' using 1:2 with linespoints title 'train', '' using 1:3 with "
      << "linespoints title '" << curves.split << "'\n";
    if (accuracy)
      g << "set title 'accuracy'\nset yrange [0:1]\nplot '" << data << "' using 1:4 with linespoints title '"
        << curves.split << "'\nunset multiplot\n";
  }
  std::string log = (dir + "/gnuplot.log").str();
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log), llvm::StringRef(log)};
  int rc = llvm::sys::ExecuteAndWait(*gnuplot, {*gnuplot, script}, std::nullopt, redirects);
  std::ifstream logIn(log);
  std::string text((std::istreambuf_iterator<char>(logIn)), std::istreambuf_iterator<char>());
  llvm::sys::fs::remove_directories(dir);
  if (rc != 0 || std::rename(tmp.c_str(), out.c_str()) != 0) {
    std::remove(tmp.c_str());
    return userError("gnuplot could not draw " + out + (text.empty() ? "" : ":\n" + text));
  }
  llvm::outs() << "wrote " << out << ": " << curves.epoch.size() << " epochs of train and " << curves.split
               << " loss" << (accuracy ? " and accuracy" : "") << "\n";
  return kOk;
}
