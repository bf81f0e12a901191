//===- Train.cpp - nnc train, eval and predict ----------------------------===//
//
// Compiles a model to its training step and hands it, wrapped as an
// rt::Trainable over the chosen executor (JIT-compiled CPU code or the
// reference evaluator), to the runtime's training loop (runtime/Training.h),
// which binaries made by `nnc build` run too.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cuda/CompileModel.h"
#include "compiler/codegen/cuda/Nvrtc.h"
#include "compiler/reference/Trainer.h"
#include "compiler/transforms/Passes.h"
#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNOps.h"
#include "runtime/CudaDevice.h"
#include "runtime/CudaModel.h"
#include "runtime/Distributed.h"
#include "runtime/Nccl.h"
#include "runtime/Schedule.h"
#include "runtime/StateDict.h"
#include "runtime/System.h"
#include "runtime/Training.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;
using ref::Tensor;

/// Parses and compiles FILE to its training step; `lr` overrides the
/// optimizer's learning rate before the step is built.
int nnc::driver::load(const std::string &path, std::optional<double> lr, Loaded &out, bool train,
                      const std::optional<std::vector<std::string>> &freeze, bool distributed) {
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
  // A command-line override of one train-section setting.
  auto setting = [&](StringRef key, Attribute value) {
    NamedAttrList t;
    if (out.train)
      t.append(out.train.getValue());
    t.set(key, value);
    out.train = t.getDictionary(ctx);
    (*out.module)->setAttr(nn::attr::kTrain, out.train);
  };
  if (lr) {
    NamedAttrList opt;
    if (out.train)
      if (auto o = dyn_cast_or_null<DictionaryAttr>(out.train.get("optimizer")))
        opt.append(o.getValue());
    if (!opt.get("kind"))
      opt.set("kind", b.getStringAttr("sgd"));
    opt.set("lr", b.getF64FloatAttr(*lr));
    setting("optimizer", opt.getDictionary(ctx));
  }
  if (freeze) {
    SmallVector<Attribute> patterns;
    for (const std::string &p : *freeze)
      patterns.push_back(b.getStringAttr(p));
    setting("freeze", b.getArrayAttr(patterns));
  }
  if (distributed)
    setting("distributed", b.getBoolAttr(true));
  out.model = *out.module->getOps<func::FuncOp>().begin();
  if (!train) {
    PassManager pm(ctx);
    buildPipeline(pm, Stage::Nn);
    if (failed(pm.run(*out.module)))
      return kUserError;
    out.model = *out.module->getOps<func::FuncOp>().begin();
    return kOk;
  }
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
    Input in;
    in.name = out.model.getArgAttrOfType<StringAttr>(i, nn::attr::kName).str();
    in.arg = i;
    in.integer = type.getElementType().isInteger(32);
    if (in.integer)
      in.classes = nn::classCount(out.model.getArgument(i));
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


/// A data path of the train section, relative to the model file.
static std::string besideModel(const Loaded &m, StringRef given) {
  llvm::SmallString<256> p;
  if (!llvm::sys::path::is_absolute(given))
    p = llvm::sys::path::parent_path(m.path);
  llvm::sys::path::append(p, given);
  return std::string(p);
}

/// `--data`/`--test` as given: a path (its kind guessed from what it is)
/// or a call such as cifar10("dir").
static int sourceFlag(const std::string &value, const char *flag, std::string &kind, std::string &path) {
  if (value.find('(') == std::string::npos) {
    path = value;
    kind = rt::guessKind(path);
    return kOk;
  }
  rt::Call call;
  rt::Status s = rt::parseCall(value, call);
  if (!s || call.args.size() != 1 || !call.args[0].isString)
    return usageError(std::string("--") + flag + " takes a path or KIND(\"path\") (mnist, csv, cifar10, npz, npy, images)" +
                      (s ? "" : ": " + s.message()));
  kind = call.name;
  path = call.args[0].text;
  static const char *kinds[] = {"mnist", "csv", "cifar10", "npz", "npy", "images"};
  if (std::find(std::begin(kinds), std::end(kinds), kind) == std::end(kinds))
    return usageError(std::string("--") + flag + ": unknown data kind '" + kind +
                      "' (mnist, csv, cifar10, npz, npy, images)");
  return kOk;
}

/// The data named by --data/--test or the train section.
int nnc::driver::dataSource(const Loaded &m, const Args &args, rt::DataSource &out) {
  for (auto [key, kind, path] : {std::tuple{"data", &out.kind, &out.path}, std::tuple{"test", &out.testKind, &out.testPath}})
    if (m.train)
      if (auto d = dyn_cast_or_null<DictionaryAttr>(m.train.get(key))) {
        *kind = cast<StringAttr>(d.get("kind")).str();
        *path = besideModel(m, cast<StringAttr>(d.get("path")).getValue());
      }
  if (args.has("data"))
    if (int rc = sourceFlag(args.get("data"), "data", out.kind, out.path))
      return rc;
  if (args.has("test"))
    if (int rc = sourceFlag(args.get("test"), "test", out.testKind, out.testPath))
      return rc;
  if (out.path.empty()) {
    llvm::errs() << "nnc: error: " << m.path << ": no training data; give --data PATH or "
                 << "'data = mnist(\"DIR\")' in the train section\n";
    return kUserError;
  }
  return kOk;
}

int nnc::driver::compileCpu(const Loaded &m, bool profile, CpuCode &out, bool fuse) {
  auto begin = std::chrono::steady_clock::now();
  out.code = ModuleOp::create(m.model.getLoc());
  auto desc = cpu::compileModel(*m.module, m.model.getName(), *out.code, profile, fuse);
  if (failed(desc))
    return kUserError;
  out.desc = std::move(*desc);
  if (auto step = out.code->lookupSymbol<func::FuncOp>(cpu::kTrainStepKernel))
    out.kernels = step->getAttrOfType<ArrayAttr>("nnc.kernels");
  auto jit = cpu::JitModule::compile(*out.code);
  if (failed(jit))
    return kUserError;
  out.jit = std::move(*jit);
  for (auto [f, name] : {std::pair{&out.desc.trainStep, cpu::kTrainStepKernel},
                         std::pair{&out.desc.model, cpu::kModelKernel}}) {
    if (failed(out.jit->prepare(name))) {
      llvm::errs() << "nnc: error: the JIT did not produce '" << name << "'\n";
      return kUserError;
    }
    size_t buffers = f->buffers(), slots = f->slots.size() / 2;
    f->call = [jit = out.jit.get(), name, buffers, slots](void **b, int64_t n, void **s) {
      (void)jit->call(name, llvm::ArrayRef<void *>(b, buffers), n, llvm::ArrayRef<void *>(s, slots));
    };
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return kOk;
}

int nnc::driver::compileCuda(const Loaded &m, const std::string &arch, CudaCode &out) {
  auto begin = std::chrono::steady_clock::now();
  auto desc = cuda::compileModel(*m.module, m.model.getName(), cuda::ptxImage(arch));
  if (failed(desc))
    return kUserError;
  out.desc = std::move(*desc);
  out.arch = arch;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return kOk;
}

int nnc::driver::prepareCuda(const Args &args, const Loaded &m, rt::CudaDriver &driver, CudaCode &out, int device) {
  if (rt::Status s = rt::loadCudaDriver(driver, device); !s)
    return userError("--target=cuda: " + s.message());
  std::string why;
  if (cuda::nvrtcVersion(&why).empty())
    return userError("--target=cuda: " + why);
  return compileCuda(m, cudaArch(args), out);
}

std::string nnc::driver::cudaArch(const Args &args) {
  if (args.has("cuda-arch"))
    return args.get("cuda-arch");
  rt::CudaDevice d = rt::probeCudaDevice();
  return d.present ? d.arch() : "sm_90";
}

std::string nnc::driver::autoTarget() {
  return rt::probeCudaDevice().present && !cuda::nvrtcVersion().empty() ? "cuda" : "cpu";
}

llvm::DenseSet<Value> nnc::driver::readByOutputs(func::FuncOp fn) {
  llvm::DenseSet<Value> needed;
  SmallVector<Value> work;
  Operation *ret = fn.front().getTerminator();
  for (unsigned i = 0; i < fn.getNumResults(); ++i) {
    auto role = fn.getResultAttrOfType<StringAttr>(i, nn::attr::kRole);
    if (!role || role.getValue() != "loss")
      work.push_back(ret->getOperand(i));
  }
  while (!work.empty()) {
    Value v = work.pop_back_val();
    if (!needed.insert(v).second)
      continue;
    if (Operation *def = v.getDefiningOp())
      llvm::append_range(work, def->getOperands());
  }
  return needed;
}

std::vector<rt::ModelInput> nnc::driver::modelInputs(const std::vector<Input> &inputs) {
  return std::vector<rt::ModelInput>(inputs.begin(), inputs.end());
}

namespace {


rt::Status failedIn(const char *what) {
  return rt::Status::error(std::string("the ") + what + " failed (see the diagnostics above)");
}

/// A batch of host tensors as the evaluator's tensors.
std::vector<Tensor> toTensors(const std::vector<rt::HostTensor> &batch) {
  std::vector<Tensor> out;
  for (const rt::HostTensor &h : batch) {
    Tensor t = Tensor::filled(h.shape);
    std::copy(h.data.begin(), h.data.end(), t.data.begin());
    out.push_back(std::move(t));
  }
  return out;
}

rt::HostTensor toHost(const Tensor &t, std::string name = {}) {
  return {std::move(name), t.shape, rt::Floats(t.data.begin(), t.data.end())};
}

/// A model run by the reference evaluator (through a ref::Trainer).
class EvaluatedModel : public rt::Trainable {
public:
  EvaluatedModel(const Loaded &m, ref::Trainer &t) : m(m), t(t), ins(modelInputs(m.inputs)) {}
  std::string modelName() const override { return m.model.getName().str(); }
  const char *backendName() const override { return t.backendName(); }
  const std::vector<rt::ModelInput> &inputs() const override { return ins; }
  rt::Status step(const std::vector<rt::HostTensor> &batch, double &loss) override {
    auto l = t.step(toTensors(batch));
    if (failed(l))
      return failedIn("training step");
    loss = *l;
    return rt::Status::ok();
  }
  rt::Status evaluate(const std::vector<rt::HostTensor> &batch, std::vector<rt::HostTensor> &outputs,
                      double &loss) override {
    auto res = t.evaluate(toTensors(batch));
    if (failed(res))
      return failedIn("evaluation");
    unsigned lossIndex = *m.lossResult();
    outputs.clear();
    for (unsigned i = 0; i < res->size(); ++i)
      if (i != lossIndex)
        outputs.push_back(toHost((*res)[i]));
    loss = (*res)[lossIndex].data[0];
    return rt::Status::ok();
  }
  std::vector<std::string> stateNames() const override { return t.stateNames(); }
  rt::Status getState(const std::string &name, rt::HostTensor &out) const override {
    Tensor *x = t.tensor(name);
    if (!x)
      return rt::Status::error("no state tensor '" + name + "'");
    out = toHost(*x, name);
    return rt::Status::ok();
  }
  rt::Status setState(const std::string &name, const rt::HostTensor &value) override {
    Tensor *x = t.tensor(name);
    if (!x || x->shape != value.shape)
      return rt::Status::error("state tensor '" + name + "' does not fit");
    x->data.assign(value.data.begin(), value.data.end());
    return rt::Status::ok();
  }
  uint64_t steps() const override { return t.steps(); }
  void setSteps(uint64_t n) override { t.setSteps(n); }
  void setFirstRow(int64_t row) override { t.setFirstRow(row); }
  double learningRate() const override { return t.learningRate(); }
  void setLearningRate(double lr) override { t.setLearningRate(lr); }
  // The compiled backends' rule, so that a checkpoint means the same to all.
  bool isConstant(const std::string &name) const override {
    std::optional<unsigned> i = argument(name);
    if (!i)
      return false;
    auto role = m.model.getArgAttrOfType<StringAttr>(*i, nn::attr::kRole);
    auto init = m.model.getArgAttrOfType<DictionaryAttr>(*i, "nn.init");
    auto kind = init ? init.getAs<StringAttr>("kind") : StringAttr();
    return role && role.getValue() == "frozen" && kind && rt::writtenOut(kind.str()) && !init.get("loaded");
  }
  bool isInteger(const std::string &name) const override {
    std::optional<unsigned> i = argument(name);
    return i && cast<ShapedType>(m.model.getArgument(*i).getType()).getElementType().isInteger(32);
  }

private:
  std::optional<unsigned> argument(const std::string &name) const {
    for (unsigned i = 0; i < m.model.getNumArguments(); ++i)
      if (auto n = m.model.getArgAttrOfType<StringAttr>(i, nn::attr::kName); n && n.getValue() == name)
        return i;
    return std::nullopt;
  }

  const Loaded &m;
  ref::Trainer &t;
  std::vector<rt::ModelInput> ins;
};

/// A model ready to train or evaluate on --target: CPU code compiled here
/// (the kernels `nnc build` would link, JIT-compiled, run by the runtime's
/// CompiledModel), CUDA kernels on a device (rt::CudaModel), or the
/// reference evaluator (auto: CUDA when a device is present, else CPU). Declared after the Loaded
/// model it comes from: compiled code refers to its context.
struct Backend {
  CpuCode cpu;
  CudaCode cuda;
  std::string device; // the CUDA device's name
  std::optional<ref::Trainer> trainer;
  std::unique_ptr<rt::Trainable> model;
};

/// What a backend must fit in host memory: a step at `batch` (0: no
/// training) and evaluation at `evalBatch`, beside `dataBytes` of data.
struct Footprint {
  int64_t batch = 0, evalBatch = rt::kEvalChunk;
  uint64_t dataBytes = 0;
};

int makeBackend(const Args &args, const Command &c, const Loaded &m, uint64_t seed, Backend &out,
                const Footprint &fits = {}) {
  std::string target = args.get("target", "auto");
  if (target == "auto")
    target = autoTarget();
  if (target == "reference") {
    auto t = ref::Trainer::create(*m.module, seed, ref::createReferenceExecutor());
    if (failed(t))
      return kUserError;
    out.trainer.emplace(std::move(*t));
    out.model = std::make_unique<EvaluatedModel>(m, *out.trainer);
    return kOk;
  }
  if (target == "cuda") {
    // The generated kernels on device 0, the state kept there; in a
    // data-parallel run, each rank on the GPU of its place among the
    // machine's ranks, its gradients combined by NCCL.
    rt::Group *group = rt::Group::current();
    rt::CudaDriver driver;
    if (int rc = prepareCuda(args, m, driver, out.cuda, group ? rt::detectLaunch().localRank : 0))
      return rc;
    auto model = std::make_unique<rt::CudaModel>(out.cuda.desc, seed, driver);
    if (rt::Status s = model->initialize(); !s)
      return userError(m.path + ": " + s.message());
    if (group) {
      std::unique_ptr<rt::NcclComm> comm;
      if (rt::Status s = rt::joinDevices(comm); !s)
        return userError(s.message());
      if (rt::Status s = model->attach(std::move(comm), rt::distributedTimeLimit()); !s)
        return userError(s.message());
    }
    out.device = driver.device;
    out.model = std::move(model);
    return kOk;
  }
  if (target != "cpu")
    return usageError("--target must be cpu, cuda, auto or reference, got '" + target + "'", &c);
  if (int rc = compileCpu(m, false, out.cpu))
    return rc;
  // Refused before anything is allocated: a model that cannot fit says so.
  if (rt::Status s = rt::checkFits(out.cpu.desc, fits.batch, fits.evalBatch, fits.dataBytes); !s)
    return userError(m.path + ": " + s.message());
  if (fits.batch > 0 && !args.has("quiet"))
    llvm::outs() << "memory: "
                 << rt::stepMemory(out.cpu.desc, fits.batch, fits.evalBatch).describe(fits.batch, fits.evalBatch)
                 << "\n";
  auto model = std::make_unique<rt::CompiledModel>(out.cpu.desc, seed, "cpu");
  if (rt::Status s = model->initialize(); !s) {
    llvm::errs() << "nnc: error: " << m.path << ": " << s.message() << "\n";
    return kUserError;
  }
  out.model = std::move(model);
  return kOk;
}

/// `s` quoted for a POSIX shell where it needs to be.
std::string shellWord(const std::string &s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                        "@%+=:,./_-") == std::string::npos)
    return s;
  std::string q = "'";
  for (char ch : s)
    q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return q + "'";
}

/// The command line that resumes this training run from its checkpoint.
std::string resumeCommand(const Command &c, const Args &args) {
  std::string cmd = std::string("nnc ") + c.name;
  for (const std::string &p : args.positional)
    cmd += " " + shellWord(p);
  for (const OptionSpec &o : c.options) {
    if (!args.has(o.name) || std::string(o.name) == "resume")
      continue;
    cmd += std::string(std::strlen(o.name) == 1 ? " -" : " --") + o.name;
    if (o.value)
      cmd += " " + shellWord(args.get(o.name));
  }
  return cmd + " --resume";
}

/// A backend holding the checkpoint given by --checkpoint.
/// The model's tensors a weights file can hold: parameters, frozen tensors
/// and batch-norm statistics, in declaration order.
std::vector<std::string> weightNames(const Loaded &m) {
  std::vector<std::string> names;
  for (unsigned i = 0; i < m.model.getNumArguments(); ++i) {
    auto role = m.model.getArgAttrOfType<StringAttr>(i, nn::attr::kRole);
    auto name = m.model.getArgAttrOfType<StringAttr>(i, nn::attr::kName);
    if (role && name && (role.getValue() == "param" || role.getValue() == "frozen" || role.getValue() == "state"))
      names.push_back(name.getValue().str());
  }
  return names;
}

/// `--init-from FILE`: the model's tensors from a PyTorch state_dict saved
/// as safetensors, with the report load_state_dict(strict=False) gives.
int initFrom(const Args &args, const Loaded &m, rt::Trainable &model) {
  if (!args.has("init-from"))
    return kOk;
  rt::LoadReport report;
  std::string path = args.get("init-from");
  if (rt::Status s = rt::initFrom(model, weightNames(m), path, args.has("strict"), report); !s)
    return userError(s.message());
  llvm::outs() << "init-from " << report.describe(path);
  llvm::outs().flush();
  return kOk;
}

int restored(const Args &args, const Command &c, const Loaded &m, Backend &out) {
  if (int rc = makeBackend(args, c, m, 0, out))
    return rc;
  if (int rc = initFrom(args, m, *out.model))
    return rc;
  if (!args.has("checkpoint"))
    return kOk;
  rt::Metadata meta;
  if (rt::Status s = rt::restoreState(*out.model, args.get("checkpoint"), meta); !s)
    return userError(s.message());
  return kOk;
}

} // namespace

/// The optimizer as the train section (or --lr) sets it: adam(lr=0.001, ...).
static std::string optimizerText(const Loaded &m) {
  auto opt = m.train ? dyn_cast_or_null<DictionaryAttr>(m.train.get("optimizer")) : DictionaryAttr();
  if (!opt)
    return "sgd(lr=0.01)";
  std::string text = opt.getAs<StringAttr>("kind").str() + "(";
  bool first = true;
  for (NamedAttribute a : opt) {
    auto f = dyn_cast<FloatAttr>(a.getValue());
    if (!f)
      continue;
    text += (first ? "" : ", ") + a.getName().str() + "=" + llvm::formatv("{0}", llvm::format("%g", f.getValueAsDouble())).str();
    first = false;
  }
  return text + ")";
}

/// Schedule, early stopping, metrics and output settings: the train
/// section's, then the command line's.
static int trainSettings(const Loaded &m, const Args &args, const Command &c, rt::TrainOptions &o) {
  std::string schedule = args.has("schedule") ? args.get("schedule") : m.text("schedule");
  if (!schedule.empty() && schedule != "none") {
    rt::Status s = rt::parseCall(schedule, o.schedule);
    if (s)
      s = rt::checkSchedule(o.schedule);
    if (!s)
      return args.has("schedule") ? usageError("--schedule: " + s.message(), &c) : userError(m.path + ": " + s.message());
  }
  o.patience = m.setting("patience", 0);
  o.topK = m.setting("top_k", 5);
  o.minDelta = m.real("min_delta", 0);
  if (!m.text("monitor").empty())
    o.monitor = m.text("monitor");
  for (auto rc : {numberOption(args, c, "patience", o.patience, 1), numberOption(args, c, "top-k", o.topK, 1),
                  numberOption(args, c, "min-delta", o.minDelta)})
    if (rc)
      return *rc;
  if (args.has("monitor")) {
    o.monitor = args.get("monitor");
    if (o.monitor != "loss" && o.monitor != "accuracy")
      return usageError("--monitor must be loss or accuracy", &c);
  }
  if (o.minDelta < 0)
    return usageError("--min-delta must be non-negative", &c);
  o.saveBest = args.get("save-best");
  o.append = args.has("append");
  if (args.has("quiet") && args.has("verbose"))
    return usageError("--quiet and --verbose exclude each other", &c);
  o.verbosity = args.has("quiet") ? 0 : args.has("verbose") ? 2 : 1;
  return kOk;
}

/// Joins a data-parallel run when a launcher started this process (or
/// --distributed=mpi|nccl says so), before the step is compiled: a
/// distributed step combines its gradients. Only rank 0 prints what goes
/// wrong before training; every rank exits with an error. `run` gets the
/// options each rank trains with (the CPU, or a CUDA device with NCCL;
/// rank 0 alone prints).
static int joinRun(const Args &args, const Command &c, Args &run) {
  run = args;
  rt::DistributedMode mode = rt::DistributedMode::Auto;
  if (args.has("distributed") && !rt::parseDistributedMode(args.get("distributed"), mode))
    return usageError("--distributed must be auto, mpi, nccl or none, got '" + args.get("distributed") + "'", &c);
  bool leader = rt::detectLaunch().rank == 0;
  auto refuse = [&](const std::string &message) {
    if (leader)
      llvm::errs() << "nnc: error: " << message << "\n";
    return kUserError;
  };
  // Gradients are combined where they are: by MPI on the CPU, by NCCL on
  // CUDA devices (one rank per GPU).
  std::string target = args.get("target", "auto");
  if (mode == rt::DistributedMode::Nccl && target != "cuda" && target != "auto")
    return refuse("--distributed=nccl combines gradients on CUDA devices (--target=cuda), not on --target=" + target);
  if (mode == rt::DistributedMode::Mpi && target == "cuda")
    return refuse("--distributed=mpi combines gradients on the CPU; on CUDA devices use --distributed=nccl");
  if (rt::Status s = rt::Group::join(mode); !s)
    return refuse(s.message());
  std::atexit(rt::Group::leave);
  rt::Group *group = rt::Group::current();
  if (!group) {
    if (args.has("global-batch"))
      return usageError("--global-batch is for a data-parallel run (started by mpirun or srun); use --batch", &c);
    return kOk;
  }
  if (target == "auto")
    run.options["target"] = target = mode == rt::DistributedMode::Nccl ? "cuda" : "cpu";
  if (target == "cuda") {
    rt::NcclLibrary nccl;
    if (rt::Status s = rt::loadNccl(nccl); !s)
      return refuse(s.message());
    // Said once here, rather than by every rank when it opens its device.
    if (rt::CudaDevice probe = rt::probeCudaDevice(); !probe.present)
      return refuse("--target=cuda: " + probe.why);
  }
  if (args.has("global-batch")) {
    int64_t global = 0;
    if (auto rc = numberOption(args, c, "global-batch", global, 1))
      return *rc;
    if (args.has("batch"))
      return refuse("give --batch (per rank) or --global-batch, not both");
    if (global % group->size() != 0)
      return refuse("--global-batch " + std::to_string(global) + " is not a multiple of the " +
                    std::to_string(group->size()) + " ranks");
    run.options["batch"] = std::to_string(global / group->size());
  }
  if (group->rank() != 0) {
    run.options.erase("verbose");
    run.options["quiet"] = "";
  }
  if (!args.has("threads"))
    run.options["threads"] = std::to_string(rt::defaultThreadsPerRank(rt::detectLaunch()));
  return kOk;
}

/// That every rank runs the same model and settings (the model's IR).
static int sameEverywhere(const Loaded &m, const rt::TrainOptions &o) {
  rt::Group *group = rt::Group::current();
  if (!group)
    return kOk;
  std::string printed;
  llvm::raw_string_ostream os(printed);
  (*m.module)->print(os);
  if (rt::Status s = rt::checkSameRun(o.settings, os.str()); !s) {
    if (group->rank() == 0)
      llvm::errs() << "nnc: error: " << s.message() << "\n";
    return kUserError;
  }
  return kOk;
}

int nnc::driver::runTrain(const Args &cliArgs) {
  const Command &c = command("train");
  if (auto rc = needFile(c, cliArgs))
    return *rc;
  Args args;
  if (int rc = joinRun(cliArgs, c, args))
    return rc;
  std::optional<double> lr;
  double lrValue = 0;
  rt::TrainOptions o;
  int64_t epochs = -1, batch = -1, threads = 1;
  double validation = -1;
  for (auto rc : {numberOption(args, c, "lr", lrValue), numberOption(args, c, "epochs", epochs, 1),
                  numberOption(args, c, "batch", batch, 1), numberOption(args, c, "seed", o.seed),
                  numberOption(args, c, "limit", o.limit, 1), numberOption(args, c, "threads", threads, 1),
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
    if (std::string note = rt::setThreads(threads); !note.empty())
      llvm::errs() << "nnc: note: " << note << "\n";
  }
  if (epochs > rt::kMaxEpochs)
    return usageError("--epochs must be at most " + std::to_string(rt::kMaxEpochs), &c);
  if (args.has("resume") && !args.has("checkpoint"))
    return usageError("--resume needs --checkpoint PATH", &c);

  std::optional<std::vector<std::string>> freeze;
  if (args.has("freeze")) {
    freeze.emplace();
    std::string list = args.get("freeze");
    for (llvm::StringRef rest = list; !rest.empty();) {
      auto [p, tail] = rest.split(',');
      if (p.trim().empty())
        return usageError("--freeze takes names or prefixes separated by commas, e.g. conv1,layer1", &c);
      freeze->push_back(p.trim().str());
      rest = tail;
    }
  }
  Loaded m;
  if (int rc = load(args.positional[0], lr, m, true, freeze, rt::Group::current() != nullptr))
    return rc;
  o.epochs = epochs >= 0 ? epochs : m.setting("epochs", 1);
  o.batch = batch > 0 ? batch : m.setting("batch", 32);
  if (!args.has("seed"))
    o.seed = static_cast<uint64_t>(m.setting("seed", 0));
  if (m.train)
    if (auto s = dyn_cast_or_null<BoolAttr>(m.train.get("shuffle")))
      o.shuffle = s.getValue();
  if (validation < 0)
    validation = m.real("validation", 0);
  if (validation >= 1)
    return usageError("--validation must be a fraction below 1", &c);
  o.checkpoint = args.get("checkpoint");
  o.resume = args.has("resume");
  o.metrics = args.get("metrics");
  o.resumeCommand = resumeCommand(c, args);
  rt::DataSource source;
  if (int rc = dataSource(m, args, source))
    return rc;
  if (int rc = trainSettings(m, args, c, o))
    return rc;
  rt::BoundData data;
  if (rt::Status s = rt::loadData(source, modelInputs(m.inputs), validation, o.seed, data); !s)
    return userError(s.message());
  std::vector<rt::Call> transforms;
  if (rt::Status s = rt::parseCallList(m.text("transform"), transforms); !s)
    return userError(s.message());
  if (rt::Status s = rt::setTransforms(data, modelInputs(m.inputs), transforms, o.seed); !s)
    return userError(m.path + ": " + s.message());
  o.settings = {{"model", m.path},
                {"data", source.kind + "(" + source.path + ")"},
                {"epochs", std::to_string(o.epochs)},
                {"batch", std::to_string(o.batch)},
                {"seed", std::to_string(o.seed)},
                {"optimizer", optimizerText(m)},
                {"schedule", o.schedule.name.empty() ? "none" : o.schedule.text()},
                {"transform", rt::callListText(transforms)},
                {"validation", std::to_string(validation)},
                {"shuffle", o.shuffle ? "true" : "false"}};
  if (!source.testPath.empty())
    o.settings.push_back({"test", source.testKind + "(" + source.testPath + ")"});
  if (rt::Group *g = rt::Group::current()) {
    o.settings.push_back({"ranks", std::to_string(g->size())});
    if (auto i = m.lossResult())
      o.lossIsSum = lossIsSum(m.model.front().getTerminator()->getOperand(*i));
  }
  o.verifyReplicas = args.has("verify-replicas");
  if (int rc = sameEverywhere(m, o))
    return rc;
  Backend backend;
  int64_t scored = data.hasTest ? data.test.count : data.train.count; // what each epoch evaluates
  int64_t trained = o.limit > 0 ? std::min(o.limit, data.train.count) : data.train.count;
  Footprint fits{std::min(o.batch, std::max<int64_t>(1, trained)), std::min<int64_t>(rt::kEvalChunk, std::max<int64_t>(1, scored)),
                 data.train.bytes() + data.test.bytes()};
  if (int rc = makeBackend(args, c, m, o.seed, backend, fits))
    return rc;
  if (int rc = initFrom(args, m, *backend.model))
    return rc;
  if (backend.cpu.jit && o.verbosity > 0)
    llvm::outs() << llvm::format("compiled %s for the CPU in %.2f s%s\n", m.model.getName().str().c_str(),
                                 backend.cpu.seconds,
                                 backend.cpu.jit->cached() ? " (code from the cache)" : "");
  if (!backend.cuda.arch.empty() && o.verbosity > 0)
    llvm::outs() << llvm::format("compiled %s for CUDA (%s) in %.2f s; device: %s\n",
                                 m.model.getName().str().c_str(), backend.cuda.arch.c_str(),
                                 backend.cuda.seconds, backend.device.c_str());
  llvm::outs().flush();
  return rt::train(*backend.model, data, o);
}

/// Per-class accuracy and the confusion matrix (rows: labels, columns:
/// predictions), as `nnc eval` prints them.
static void printConfusion(const rt::Score &s, const std::vector<std::string> &names) {
  int64_t n = s.classes;
  auto name = [&](int64_t c) { return c < static_cast<int64_t>(names.size()) ? names[c] : std::to_string(c); };
  size_t width = 5;
  for (int64_t c = 0; c < n; ++c)
    width = std::max(width, name(c).size());
  llvm::outs() << "per class:\n";
  for (int64_t c = 0; c < n; ++c) {
    int64_t total = 0;
    for (int64_t p = 0; p < n; ++p)
      total += s.confusion[c * n + p];
    llvm::outs() << "  " << llvm::left_justify(name(c), width) << "  ";
    if (total)
      llvm::outs() << llvm::format("%6.2f%% of %lld\n", 100.0 * s.confusion[c * n + c] / total,
                                   static_cast<long long>(total));
    else
      llvm::outs() << "no samples\n";
  }
  llvm::outs() << "confusion matrix (rows: label, columns: prediction):\n  " << std::string(width, ' ');
  for (int64_t p = 0; p < n; ++p)
    llvm::outs() << " " << llvm::right_justify(name(p), std::max<size_t>(6, name(p).size()));
  llvm::outs() << "\n";
  for (int64_t c = 0; c < n; ++c) {
    llvm::outs() << "  " << llvm::left_justify(name(c), width);
    for (int64_t p = 0; p < n; ++p)
      llvm::outs() << " "
                   << llvm::right_justify(std::to_string(s.confusion[c * n + p]), std::max<size_t>(6, name(p).size()));
    llvm::outs() << "\n";
  }
}

int nnc::driver::runEval(const Args &args) {
  const Command &c = command("eval");
  if (auto rc = needFile(c, args))
    return *rc;
  if (!args.has("checkpoint") && !args.has("init-from"))
    return usageError("eval needs --checkpoint PATH or --init-from FILE", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  rt::DataSource source;
  if (int rc = dataSource(m, args, source))
    return rc;
  rt::BoundData data;
  if (rt::Status s = rt::loadData(source, modelInputs(m.inputs), 0, 0, data); !s)
    return userError(s.message());
  Backend backend;
  if (int rc = restored(args, c, m, backend))
    return rc;
  std::vector<rt::Call> transforms;
  if (rt::Status s = rt::parseCallList(m.text("transform"), transforms); !s)
    return userError(s.message());
  if (rt::Status s = rt::setTransforms(data, modelInputs(m.inputs), transforms, 0); !s)
    return userError(m.path + ": " + s.message());
  int64_t topK = m.setting("top_k", 5);
  if (auto rc = numberOption(args, c, "top-k", topK, 1))
    return *rc;
  const rt::Table &set = data.hasTest ? data.test : data.train;
  rt::Score score;
  // In the training batch, so that a summed loss reads as in training.
  if (rt::Status s = rt::score(*backend.model, set, score, m.setting("batch", 32), &data.pipeline, topK); !s)
    return userError(s.message());
  llvm::outs() << llvm::format("%s: %lld samples, loss %.4f", data.hasTest ? "test" : "train",
                               static_cast<long long>(set.count), score.loss);
  if (score.hasAccuracy) {
    llvm::outs() << llvm::format(", accuracy %.2f%%", 100 * score.accuracy);
    if (score.k)
      llvm::outs() << llvm::format(", top-%lld %.2f%%", static_cast<long long>(score.k), 100 * score.topK);
  }
  if (score.hasRegression)
    llvm::outs() << llvm::format(", mse %.4g, mae %.4g, r2 %.4f", score.mse, score.mae, score.r2);
  llvm::outs() << "\n";
  if (score.classes > 1 && !args.has("quiet"))
    printConfusion(score, data.classNames);
  return kOk;
}

int nnc::driver::runPredict(const Args &args) {
  const Command &c = command("predict");
  if (auto rc = needFile(c, args))
    return *rc;
  if ((!args.has("checkpoint") && !args.has("init-from")) || !args.has("input"))
    return usageError("predict needs --checkpoint PATH (or --init-from FILE) and --input FILE.csv", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  // Predictions need only the inputs the outputs read: labels and targets
  // feed the loss alone.
  func::FuncOp fn = m.model;
  unsigned loss = *m.lossResult();
  llvm::DenseSet<Value> needed = readByOutputs(fn);
  std::vector<Input> used;
  for (const Input &in : m.inputs)
    if (needed.contains(fn.getArgument(in.arg)))
      used.push_back(in);
  rt::Table raw, table;
  rt::Status s = rt::loadCsv(args.get("input"), raw);
  if (s)
    s = rt::bindInputs(std::move(raw), modelInputs(used), rt::bindingOf(raw, modelInputs(used)), table);
  if (!s)
    return userError(s.message());
  Backend backend;
  if (int rc = restored(args, c, m, backend))
    return rc;
  std::vector<int64_t> all(table.count);
  std::iota(all.begin(), all.end(), 0);
  std::vector<rt::HostTensor> given;
  if (rt::Status s = rt::batchOf(table, modelInputs(used), all, given); !s)
    return userError(s.message());
  std::vector<rt::HostTensor> inputs;
  for (const Input &in : m.inputs) {
    auto it = llvm::find_if(used, [&](const Input &u) { return u.arg == in.arg; });
    if (it != used.end()) {
      inputs.push_back(given[it - used.begin()]);
    } else { // unused: any valid value (zeros are valid labels too)
      rt::HostTensor zeros{in.name, {table.count}, {}};
      zeros.shape.insert(zeros.shape.end(), in.dims.begin(), in.dims.end());
      zeros.data.assign(zeros.numel(), 0.0f);
      inputs.push_back(std::move(zeros));
    }
  }
  std::vector<rt::HostTensor> res; // the outputs, loss excluded
  double lossValue = 0;
  if (rt::Status s = backend.model->evaluate(inputs, res, lossValue); !s)
    return userError(s.message());
  std::string text;
  llvm::raw_string_ostream os(text);
  std::vector<unsigned> outs; // their results in the model function
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (i != loss)
      outs.push_back(i);
  // Header: one column per output element, then the class of a classifier.
  // A classifier (a model trained on i32 labels) also gets a class column.
  bool labelled = llvm::any_of(m.inputs, [](const Input &in) { return in.integer; });
  bool classify = labelled && res.size() == 1 && res[0].shape.size() == 2 && res[0].shape[1] > 1;
  bool firstCol = true;
  for (auto [k, o] : llvm::enumerate(outs)) {
    std::string name = fn.getResultAttrOfType<StringAttr>(o, nn::attr::kName).str();
    int64_t width = res[k].numel() / std::max<int64_t>(1, table.count);
    for (int64_t j = 0; j < width; ++j) {
      os << (firstCol ? "" : ",") << name << (width > 1 ? "[" + std::to_string(j) + "]" : "");
      firstCol = false;
    }
  }
  os << (classify ? ",class\n" : "\n");
  for (int64_t r = 0; r < table.count; ++r) {
    firstCol = true;
    for (const rt::HostTensor &y : res) {
      int64_t width = y.numel() / std::max<int64_t>(1, table.count);
      for (int64_t k = 0; k < width; ++k) {
        os << (firstCol ? "" : ",") << llvm::format("%.6g", y.data[r * width + k]);
        firstCol = false;
      }
    }
    if (classify) {
      const rt::HostTensor &y = res[0];
      int64_t k = y.shape[1], best = 0;
      for (int64_t j = 1; j < k; ++j)
        if (y.data[r * k + j] > y.data[r * k + best])
          best = j;
      os << "," << best;
    }
    os << "\n";
  }
  return writeOutput(args.get("o", "-"), text);
}

int nnc::driver::runExport(const Args &args) {
  const Command &c = command("export");
  if (auto rc = needFile(c, args))
    return *rc;
  if (!args.has("checkpoint") || !args.has("o"))
    return usageError("export needs --checkpoint PATH and -o FILE.safetensors (or FILE.onnx with --format onnx)", &c);
  std::string format = args.get("format", llvm::StringRef(args.get("o")).ends_with(".onnx") ? "onnx" : "pt");
  if (format != "pt" && format != "onnx")
    return usageError("--format must be pt (a PyTorch state_dict as safetensors) or onnx, got '" + format + "'", &c);
  Loaded m;
  if (int rc = load(args.positional[0], std::nullopt, m))
    return rc;
  // The checkpoint's tensors, checked as a resume checks them, then
  // written under PyTorch's keys and layouts.
  std::vector<rt::HostTensor> tensors;
  rt::Metadata meta;
  std::string from = args.get("checkpoint");
  if (rt::Status s = rt::loadCheckpoint(from, tensors, meta); !s)
    return userError(s.message());
  std::string model = m.model.getName().str();
  if (meta.count("nnc.model") && meta["nnc.model"] != model)
    return userError(from + ": the checkpoint is of model '" + meta["nnc.model"] + "', not '" + model + "'");
  if (format == "onnx") {
    if (int rc = exportOnnx(m, tensors, args.get("o")))
      return rc;
    llvm::outs() << "wrote " << model << " as ONNX (opset 13) to " << args.get("o") << "\n";
    return kOk;
  }
  std::vector<rt::HostTensor> out;
  for (const std::string &name : weightNames(m)) {
    auto it = std::find_if(tensors.begin(), tensors.end(), [&](const rt::HostTensor &t) { return t.name == name; });
    if (it == tensors.end())
      return userError(from + ": no tensor '" + name + "' (the checkpoint does not fit this model)");
    out.push_back(rt::toTorch(*it));
  }
  std::string to = args.get("o");
  if (rt::Status s = rt::saveCheckpoint(to, out, {{"format", "pt"}}); !s)
    return userError(s.message());
  llvm::outs() << "wrote " << out.size() << " tensors of " << model << " under PyTorch's names to " << to << "\n";
  return kOk;
}
