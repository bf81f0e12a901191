//===- Train.cpp - nnc train, eval and predict ----------------------------===//
//
// The training loop: compile the model to its training step, bind the data
// set's fields to the model's inputs, then for every epoch shuffle, run the
// step on each mini-batch (showing progress), evaluate, append metrics and
// save a checkpoint. Steps run on the reference evaluator, the backend of
// this version; the loop itself uses only the runtime (data, checkpoints,
// progress), which the compiled backends share.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/Driver.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/reference/Trainer.h"
#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNOps.h"
#include "runtime/Checkpoint.h"
#include "runtime/Data.h"
#include "runtime/Progress.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;
using ref::Tensor;

namespace {

/// One model input as the data sees it.
struct Input {
  std::string name;
  unsigned arg;
  std::vector<int64_t> dims; // without the batch axis
  int64_t width = 1;
  bool integer = false;
};

/// A compiled model with its training step, ready for a Trainer.
struct Loaded {
  Session session;
  OwningOpRef<ModuleOp> module;
  mutable func::FuncOp model; // FuncOp accessors are not const
  std::vector<Input> inputs;
  DictionaryAttr train;
  std::string path;

  int64_t setting(StringRef key, int64_t dflt) const {
    auto a = train ? dyn_cast_or_null<IntegerAttr>(train.get(key)) : IntegerAttr();
    return a ? a.getInt() : dflt;
  }
  double real(StringRef key, double dflt) const {
    auto a = train ? dyn_cast_or_null<FloatAttr>(train.get(key)) : FloatAttr();
    return a ? a.getValueAsDouble() : dflt;
  }
  std::optional<unsigned> lossResult() const {
    for (unsigned i = 0; i < model.getNumResults(); ++i)
      if (auto r = model.getResultAttrOfType<StringAttr>(i, nn::attr::kRole))
        if (r.getValue() == "loss")
          return i;
    return std::nullopt;
  }
};

/// Parses and compiles FILE to its training step; `lr` overrides the
/// optimizer's learning rate before the step is built.
int load(const std::string &path, std::optional<double> lr, Loaded &out) {
  out.path = path;
  if (!out.session.open(path))
    return kUserError;
  SourceMgrDiagnosticHandler handler(out.session.sourceMgr, &out.session.ctx);
  out.module = out.session.load(path);
  if (!out.module)
    return kUserError;
  MLIRContext *ctx = &out.session.ctx;
  Builder b(ctx);
  out.train = (*out.module)->getAttrOfType<DictionaryAttr>(nn::attr::kTrain);
  if (lr) {
    NamedAttrList opt;
    if (out.train)
      if (auto o = dyn_cast_or_null<DictionaryAttr>(out.train.get("optimizer")))
        opt.append(o.getValue());
    if (!opt.get("kind"))
      opt.set("kind", b.getStringAttr("sgd"));
    opt.set("lr", b.getF64FloatAttr(*lr));
    NamedAttrList t;
    if (out.train)
      t.append(out.train.getValue());
    t.set("optimizer", opt.getDictionary(ctx));
    out.train = t.getDictionary(ctx);
    (*out.module)->setAttr(nn::attr::kTrain, out.train);
  }
  out.model = *out.module->getOps<func::FuncOp>().begin();
  if (!out.lossResult()) {
    llvm::errs() << "nnc: error: " << path << ": model '" << out.model.getName()
                 << "' has nothing to train: it has no 'minimize'\n";
    return kUserError;
  }
  PassManager pm(ctx);
  buildPipeline(pm, Stage::Train);
  if (failed(pm.run(*out.module)))
    return kUserError;
  out.model = out.module->lookupSymbol<func::FuncOp>(out.model.getName());
  for (unsigned i = 0; i < out.model.getNumArguments(); ++i) {
    auto role = out.model.getArgAttrOfType<StringAttr>(i, nn::attr::kRole);
    if (!role || role.getValue() != "input")
      continue;
    auto type = cast<RankedTensorType>(out.model.getArgument(i).getType());
    Input in{out.model.getArgAttrOfType<StringAttr>(i, nn::attr::kName).str(), i, {}, 1,
             type.getElementType().isInteger(32)};
    for (int64_t d : type.getShape().drop_front()) {
      if (ShapedType::isDynamic(d)) {
        llvm::errs() << "nnc: error: " << path << ": input '" << in.name
                     << "' may have a symbolic size only in its first (batch) axis\n";
        return kUserError;
      }
      in.dims.push_back(d);
      in.width *= d;
    }
    if (type.getRank() == 0 || !type.isDynamicDim(0)) {
      llvm::errs() << "nnc: error: " << path << ": input '" << in.name
                   << "' needs a symbolic batch axis first, e.g. f32[B, 784]\n";
      return kUserError;
    }
    out.inputs.push_back(std::move(in));
  }
  return kOk;
}

/// Regroups a data set's fields into one field per model input.
rt::Status arrange(const rt::Table &data, const std::vector<Input> &inputs, bool mnist,
                   rt::Table &out) {
  out = rt::Table();
  out.count = data.count;
  size_t next = 0; // next CSV column
  for (const Input &in : inputs) {
    rt::Field f{in.name, in.width, in.integer, {}};
    if (mnist) {
      const rt::Field &src = data.fields[in.integer ? 1 : 0];
      if (src.width != in.width)
        return rt::Status::error("input '" + in.name + "' takes " + std::to_string(in.width) +
                                 " values per sample, but MNIST " + src.name + " have " +
                                 std::to_string(src.width));
      f.values = src.values;
    } else {
      if (next + in.width > data.fields.size())
        return rt::Status::error("the CSV file has " + std::to_string(data.fields.size()) +
                                 " columns, too few for input '" + in.name + "'");
      f.values.resize(data.count * in.width);
      for (int64_t c = 0; c < in.width; ++c)
        for (int64_t r = 0; r < data.count; ++r)
          f.values[r * in.width + c] = data.fields[next + c].values[r];
      next += in.width;
    }
    if (in.integer)
      for (float v : f.values)
        if (v != std::floor(v))
          return rt::Status::error("input '" + in.name + "' is i32, but the data holds " +
                                   std::to_string(v));
    out.fields.push_back(std::move(f));
  }
  if (!mnist && next != data.fields.size())
    return rt::Status::error("the CSV file has " + std::to_string(data.fields.size()) +
                             " columns, but the model's inputs take " + std::to_string(next));
  return rt::Status::ok();
}

/// The tensors of one mini-batch.
std::vector<Tensor> batchOf(const rt::Table &t, const std::vector<Input> &inputs,
                            const std::vector<int64_t> &indices) {
  std::vector<Tensor> out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::vector<int64_t> shape = {static_cast<int64_t>(indices.size())};
    shape.insert(shape.end(), inputs[i].dims.begin(), inputs[i].dims.end());
    Tensor x = Tensor::filled(shape);
    const rt::Field &f = t.fields[i];
    for (size_t r = 0; r < indices.size(); ++r)
      for (int64_t c = 0; c < f.width; ++c)
        x.data[r * f.width + c] = f.values[indices[r] * f.width + c];
    out.push_back(std::move(x));
  }
  return out;
}

struct Data {
  rt::Table train, test;
  bool hasTest = false;
};

/// Loads the data named by --data or the train section.
int loadData(const Loaded &m, const Args &args, Data &out, uint64_t seed, double validation) {
  std::string kind, path;
  if (m.train)
    if (auto d = dyn_cast_or_null<DictionaryAttr>(m.train.get("data"))) {
      kind = cast<StringAttr>(d.get("kind")).str();
      // Paths in a model file are relative to the file.
      llvm::SmallString<256> p(llvm::sys::path::parent_path(m.path));
      llvm::sys::path::append(p, cast<StringAttr>(d.get("path")).getValue());
      path = std::string(p);
    }
  if (args.has("data")) {
    path = args.get("data");
    kind = llvm::StringRef(path).ends_with(".csv") ? "csv" : "mnist";
  }
  if (path.empty()) {
    llvm::errs() << "nnc: error: " << m.path << ": no training data; give --data PATH or "
                 << "'data = mnist(\"DIR\")' in the train section\n";
    return kUserError;
  }
  rt::Table raw, rawTest;
  rt::Status s;
  if (kind == "mnist") {
    rt::Dataset train, test;
    s = rt::loadMnist(path, "train", train);
    if (s)
      s = rt::loadMnist(path, "t10k", test);
    if (s) {
      raw = rt::fromMnist(train);
      rawTest = rt::fromMnist(test);
      out.hasTest = true;
    }
  } else {
    s = rt::loadCsv(path, raw);
  }
  if (s)
    s = arrange(raw, m.inputs, kind == "mnist", out.train);
  if (s && out.hasTest)
    s = arrange(rawTest, m.inputs, true, out.test);
  if (!s) {
    llvm::errs() << "nnc: error: " << s.message() << "\n";
    return kUserError;
  }
  if (validation > 0) {
    rt::Table all = std::move(out.train);
    rt::splitValidation(all, validation, seed, out.train, out.test);
    out.hasTest = true;
  }
  return kOk;
}

struct Score {
  double loss = 0;
  std::optional<double> accuracy;
};

/// Loss and accuracy of the model (evaluation mode) over a whole table.
FailureOr<Score> evaluate(ref::Trainer &t, const Loaded &m, const rt::Table &data) {
  func::FuncOp fn = m.model;
  unsigned loss = *m.lossResult();
  // Accuracy: class labels against the first output's argmax, or a 0/1
  // target against the first output thresholded at 0.5.
  std::optional<unsigned> out;
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (i != loss) {
      out = i;
      break;
    }
  int labels = -1, target = -1;
  for (size_t i = 0; i < m.inputs.size(); ++i) {
    if (m.inputs[i].integer && labels < 0)
      labels = static_cast<int>(i);
    if (!m.inputs[i].integer && m.inputs[i].width == 1)
      target = static_cast<int>(i);
  }
  Score score;
  int64_t correct = 0;
  bool counted = false;
  const int64_t chunk = 1000;
  for (int64_t start = 0; start < data.count; start += chunk) {
    std::vector<int64_t> idx;
    for (int64_t i = start; i < std::min(data.count, start + chunk); ++i)
      idx.push_back(i);
    std::vector<Tensor> in = batchOf(data, m.inputs, idx);
    auto res = t.evaluate(in);
    if (failed(res))
      return failure();
    score.loss += (*res)[loss].data[0] * static_cast<double>(idx.size());
    if (!out)
      continue;
    const Tensor &y = (*res)[*out];
    if (y.shape.size() != 2)
      continue;
    int64_t classes = y.shape[1];
    for (size_t r = 0; r < idx.size(); ++r) {
      if (classes > 1 && labels >= 0) {
        int64_t best = 0;
        for (int64_t c = 1; c < classes; ++c)
          if (y.data[r * classes + c] > y.data[r * classes + best])
            best = c;
        correct += best == static_cast<int64_t>(in[labels].data[r]);
        counted = true;
      } else if (classes == 1 && target >= 0) {
        correct += (y.data[r] > 0.5) == (in[target].data[r] > 0.5);
        counted = true;
      }
    }
  }
  score.loss /= static_cast<double>(std::max<int64_t>(1, data.count));
  if (counted)
    score.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  return score;
}

std::vector<rt::HostTensor> snapshot(ref::Trainer &t) {
  std::vector<rt::HostTensor> out;
  for (const std::string &name : t.stateNames()) {
    const Tensor &x = *t.tensor(name);
    out.push_back({name, x.shape, std::vector<float>(x.data.begin(), x.data.end())});
  }
  return out;
}

/// Restores a checkpoint into the trainer; every state tensor must be there.
int restore(ref::Trainer &t, const Loaded &m, const std::string &path, rt::Metadata &meta) {
  std::vector<rt::HostTensor> tensors;
  rt::Status s = rt::loadCheckpoint(path, tensors, meta);
  if (!s) {
    llvm::errs() << "nnc: error: " << s.message() << "\n";
    return kUserError;
  }
  if (meta["nnc.model"] != m.model.getName()) {
    llvm::errs() << "nnc: error: " << path << ": the checkpoint is of model '"
                 << meta["nnc.model"] << "', not '" << m.model.getName() << "'\n";
    return kUserError;
  }
  for (const std::string &name : t.stateNames()) {
    auto it = llvm::find_if(tensors, [&](const rt::HostTensor &h) { return h.name == name; });
    Tensor *dst = t.tensor(name);
    if (it == tensors.end() || it->shape != dst->shape) {
      llvm::errs() << "nnc: error: " << path << ": "
                   << (it == tensors.end() ? "no tensor '" + name + "'"
                                           : "tensor '" + name + "' has another shape")
                   << " (the checkpoint does not fit this model)\n";
      return kUserError;
    }
    dst->data.assign(it->data.begin(), it->data.end());
  }
  t.setSteps(std::strtoull(meta["nnc.step"].c_str(), nullptr, 10));
  return kOk;
}

/// The executor for --target: cpu (the default; auto picks it, as no CUDA
/// device is supported yet) or reference (the evaluator).
int chooseTarget(const Args &args, const Command &c, std::shared_ptr<ref::Executor> &out) {
  std::string target = args.get("target", "auto");
  if (target == "cpu" || target == "auto") {
    out = cpu::createExecutor();
  } else if (target == "reference") {
    out = ref::createReferenceExecutor();
  } else if (target == "cuda") {
    llvm::errs() << "nnc: error: --target=cuda is not available in this version of nnc\n";
    return kUserError;
  } else {
    return usageError("--target must be cpu, cuda, auto or reference, got '" + target + "'", &c);
  }
  return kOk;
}

/// A trainer on --target holding the checkpoint given by --checkpoint.
FailureOr<ref::Trainer> restored(const Args &args, const Command &c, const Loaded &m,
                                 std::shared_ptr<ref::Executor> &executor, int &rc) {
  rc = chooseTarget(args, c, executor);
  if (rc)
    return failure();
  auto t = ref::Trainer::create(*m.module, 0, executor);
  rc = kUserError;
  if (failed(t))
    return failure();
  rt::Metadata meta;
  rc = restore(*t, m, args.get("checkpoint"), meta);
  if (rc)
    return failure();
  return t;
}

std::string percent(std::optional<double> a) {
  if (!a)
    return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * *a);
  return buf;
}

} // namespace

int nnc::driver::runTrain(const Args &args) {
  const Command &c = command("train");
  if (auto rc = needFile(c, args))
    return *rc;
  std::optional<double> lr;
  double lrValue = 0;
  int64_t epochs = -1, batch = -1, limit = -1, threads = 1;
  double validation = -1;
  uint64_t seed = 0;
  bool seedGiven = args.has("seed");
  for (auto rc : {numberOption(args, c, "lr", lrValue), numberOption(args, c, "epochs", epochs),
                  numberOption(args, c, "batch", batch), numberOption(args, c, "seed", seed),
                  numberOption(args, c, "limit", limit), numberOption(args, c, "threads", threads),
                  numberOption(args, c, "validation", validation)})
    if (rc)
      return *rc;
  if (args.has("lr"))
    lr = lrValue;
  // Parallel loops run on the OpenMP runtime, which reads its thread count
  // when the first compiled step runs (default: every core).
  if (args.has("threads")) {
    if (threads < 1)
      return usageError("--threads must be at least 1", &c);
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
  }
  if (args.has("resume") && !args.has("checkpoint"))
    return usageError("--resume needs --checkpoint PATH", &c);

  Loaded m;
  // Declared after the model: compiled code refers to its context, so it
  // must be destroyed first.
  std::shared_ptr<ref::Executor> executor;
  if (int rc = chooseTarget(args, c, executor))
    return rc;
  if (int rc = load(args.positional[0], lr, m))
    return rc;
  if (epochs < 0)
    epochs = m.setting("epochs", 1);
  if (batch <= 0)
    batch = m.setting("batch", 32);
  if (!seedGiven)
    seed = static_cast<uint64_t>(m.setting("seed", 0));
  bool shuffle = true;
  if (m.train)
    if (auto s = dyn_cast_or_null<BoolAttr>(m.train.get("shuffle")))
      shuffle = s.getValue();
  if (validation < 0)
    validation = m.real("validation", 0);
  if (validation >= 1)
    return usageError("--validation must be a fraction below 1", &c);
  Data data;
  if (int rc = loadData(m, args, data, seed, validation))
    return rc;
  if (limit > 0 && limit < data.train.count) {
    std::vector<int64_t> first(limit);
    std::iota(first.begin(), first.end(), 0);
    data.train = rt::gather(data.train, first);
  }

  auto created = ref::Trainer::create(*m.module, seed, executor);
  if (failed(created))
    return kUserError;
  ref::Trainer &t = *created;
  int64_t startEpoch = 1;
  std::string ckpt = args.get("checkpoint");
  if (args.has("resume")) {
    rt::Metadata meta;
    if (int rc = restore(t, m, ckpt, meta))
      return rc;
    startEpoch = std::strtoll(meta["nnc.epoch"].c_str(), nullptr, 10) + 1;
    llvm::outs() << "resuming after epoch " << startEpoch - 1 << " (step " << t.steps() << ")\n";
  }

  std::ofstream metrics;
  if (args.has("metrics")) {
    bool fresh = !std::ifstream(args.get("metrics")).good();
    metrics.open(args.get("metrics"), std::ios::app);
    if (!metrics) {
      llvm::errs() << "nnc: error: cannot write '" << args.get("metrics") << "'\n";
      return kUserError;
    }
    if (fresh)
      metrics << "epoch,step,train_loss,eval_loss,eval_accuracy,seconds,samples_per_second\n";
  }

  int64_t steps = (data.train.count + batch - 1) / batch;
  llvm::outs() << "training " << m.model.getName() << ": " << data.train.count << " samples, "
               << epochs << " epochs, batch " << batch << ", seed " << seed
               << " (" << t.backendName() << ")\n";
  llvm::outs().flush();
  rt::Progress progress(stdout);
  int64_t samples = 0;
  for (int64_t epoch = startEpoch; epoch <= epochs; ++epoch) {
    auto begin = std::chrono::steady_clock::now();
    std::vector<int64_t> order = rt::epochOrder(data.train.count, seed, epoch, shuffle);
    double lossSum = 0;
    for (int64_t k = 0; k < steps; ++k) {
      std::vector<int64_t> idx(order.begin() + k * batch,
                               order.begin() + std::min(data.train.count, (k + 1) * batch));
      auto loss = t.step(batchOf(data.train, m.inputs, idx));
      if (failed(loss))
        return kUserError;
      if (!std::isfinite(*loss)) {
        progress.finishLine();
        llvm::errs() << "nnc: error: the loss became " << *loss << " at epoch " << epoch
                     << ", step " << k + 1 << "; try a smaller learning rate\n";
        return kUserError;
      }
      lossSum += *loss * static_cast<double>(idx.size());
      samples += static_cast<int64_t>(idx.size());
      progress.update(epoch, epochs, k + 1, steps, lossSum / static_cast<double>(std::min(data.train.count, (k + 1) * batch)), samples);
    }
    progress.finishLine();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
    const rt::Table &evalSet = data.hasTest ? data.test : data.train;
    auto score = evaluate(t, m, evalSet);
    if (failed(score))
      return kUserError;
    double trainLoss = lossSum / static_cast<double>(data.train.count);
    // Every epoch's line for up to 50 epochs, then about 50 lines in all.
    int64_t every = std::max<int64_t>(1, epochs / 50);
    if (epoch == epochs || epoch % every == 0) {
      llvm::outs() << llvm::format("epoch %lld/%lld: loss %.4f", (long long)epoch,
                                   (long long)epochs, trainLoss);
      llvm::outs() << (data.hasTest ? "; test: " : "; on the training set: ")
                   << llvm::format("loss %.4f", score->loss);
      if (score->accuracy)
        llvm::outs() << ", accuracy " << percent(score->accuracy);
      llvm::outs() << llvm::format("; %.1f s, %.0f samples/s\n", seconds,
                                   static_cast<double>(data.train.count) / seconds);
      llvm::outs().flush();
    }
    if (metrics.is_open())
      metrics << epoch << "," << t.steps() << "," << trainLoss << "," << score->loss << ","
              << (score->accuracy ? std::to_string(*score->accuracy) : "") << "," << seconds
              << "," << static_cast<double>(data.train.count) / seconds << std::endl;
    if (!ckpt.empty()) {
      rt::Metadata meta = {{"nnc.model", m.model.getName().str()},
                           {"nnc.epoch", std::to_string(epoch)},
                           {"nnc.step", std::to_string(t.steps())},
                           {"nnc.seed", std::to_string(seed)}};
      rt::Status s = rt::saveCheckpoint(ckpt, snapshot(t), meta);
      if (!s) {
        llvm::errs() << "nnc: error: " << s.message() << "\n";
        return kUserError;
      }
    }
  }
  return kOk;
}

int nnc::driver::runEval(const Args &args) {
  const Command &c = command("eval");
  if (auto rc = needFile(c, args))
    return *rc;
  if (!args.has("checkpoint"))
    return usageError("eval needs --checkpoint PATH", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  Data data;
  if (int rc = loadData(m, args, data, 0, 0))
    return rc;
  std::shared_ptr<ref::Executor> executor; // destroyed before the model
  int rc = kOk;
  auto t = restored(args, c, m, executor, rc);
  if (failed(t))
    return rc;
  const rt::Table &set = data.hasTest ? data.test : data.train;
  auto score = evaluate(*t, m, set);
  if (failed(score))
    return kUserError;
  llvm::outs() << llvm::format("%s: %lld samples, loss %.4f", data.hasTest ? "test" : "train",
                               static_cast<long long>(set.count), score->loss);
  if (score->accuracy)
    llvm::outs() << ", accuracy " << percent(score->accuracy);
  llvm::outs() << "\n";
  return kOk;
}

int nnc::driver::runPredict(const Args &args) {
  const Command &c = command("predict");
  if (auto rc = needFile(c, args))
    return *rc;
  if (!args.has("checkpoint") || !args.has("input"))
    return usageError("predict needs --checkpoint PATH and --input FILE.csv", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  // Predictions need only the inputs the outputs read: labels and targets
  // feed the loss alone.
  func::FuncOp fn = m.model;
  unsigned loss = *m.lossResult();
  llvm::DenseSet<Value> needed;
  SmallVector<Value> work;
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (i != loss)
      work.push_back(fn.front().getTerminator()->getOperand(i));
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (!needed.insert(v).second)
      continue;
    if (Operation *def = v.getDefiningOp())
      llvm::append_range(work, def->getOperands());
  }
  std::vector<Input> used;
  for (const Input &in : m.inputs)
    if (needed.contains(fn.getArgument(in.arg)))
      used.push_back(in);
  rt::Table raw, table;
  rt::Status s = rt::loadCsv(args.get("input"), raw);
  if (s)
    s = arrange(raw, used, false, table);
  if (!s) {
    llvm::errs() << "nnc: error: " << s.message() << "\n";
    return kUserError;
  }
  std::shared_ptr<ref::Executor> executor; // destroyed before the model
  int rc = kOk;
  auto t = restored(args, c, m, executor, rc);
  if (failed(t))
    return rc;
  std::vector<int64_t> all(table.count);
  std::iota(all.begin(), all.end(), 0);
  std::vector<Tensor> given = batchOf(table, used, all);
  std::vector<Tensor> inputs;
  for (const Input &in : m.inputs) {
    auto it = llvm::find_if(used, [&](const Input &u) { return u.arg == in.arg; });
    if (it != used.end()) {
      inputs.push_back(given[it - used.begin()]);
    } else { // unused: any valid value (zeros are valid labels too)
      std::vector<int64_t> shape = {table.count};
      shape.insert(shape.end(), in.dims.begin(), in.dims.end());
      inputs.push_back(Tensor::filled(shape));
    }
  }
  auto res = t->evaluate(inputs);
  if (failed(res))
    return kUserError;
  std::string text;
  llvm::raw_string_ostream os(text);
  std::vector<unsigned> outs;
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (i != loss)
      outs.push_back(i);
  // Header: one column per output element, then the class of a classifier.
  // A classifier (a model trained on i32 labels) also gets a class column.
  bool labelled = llvm::any_of(m.inputs, [](const Input &in) { return in.integer; });
  bool classify = labelled && outs.size() == 1 && (*res)[outs[0]].shape.size() == 2 &&
                  (*res)[outs[0]].shape[1] > 1;
  bool firstCol = true;
  for (unsigned o : outs) {
    std::string name = fn.getResultAttrOfType<StringAttr>(o, nn::attr::kName).str();
    int64_t width = (*res)[o].numel() / std::max<int64_t>(1, table.count);
    for (int64_t k = 0; k < width; ++k) {
      os << (firstCol ? "" : ",") << name << (width > 1 ? "[" + std::to_string(k) + "]" : "");
      firstCol = false;
    }
  }
  os << (classify ? ",class\n" : "\n");
  for (int64_t r = 0; r < table.count; ++r) {
    firstCol = true;
    for (unsigned o : outs) {
      const Tensor &y = (*res)[o];
      int64_t width = y.numel() / std::max<int64_t>(1, table.count);
      for (int64_t k = 0; k < width; ++k) {
        os << (firstCol ? "" : ",") << llvm::format("%.6g", y.data[r * width + k]);
        firstCol = false;
      }
    }
    if (classify) {
      const Tensor &y = (*res)[outs[0]];
      int64_t k = y.shape[1], best = 0;
      for (int64_t j = 1; j < k; ++j)
        if (y.data[r * k + j] > y.data[r * k + best])
          best = j;
      os << "," << best;
    }
    os << "\n";
  }
  std::error_code ec;
  llvm::ToolOutputFile file(args.get("o", "-"), ec, llvm::sys::fs::OF_Text);
  if (ec) {
    llvm::errs() << "nnc: error: cannot write '" << args.get("o") << "': " << ec.message() << "\n";
    return kUserError;
  }
  file.os() << text;
  file.keep();
  return kOk;
}
