//===- nnc.cpp - the nnc command-line driver ------------------------------===//
//
// One binary with subcommands. Each subcommand declares its options in a
// table, which drives parsing, `--help` and "did you mean" for typos.
//
// Exit codes: 0 success, 1 user error (bad model, bad data, failed check),
// 2 usage error (unknown command or option, missing argument).
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/Driver.h"

#include "compiler/frontend/AST.h"
#include "compiler/frontend/Lexer.h"
#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/Jit.h"
#include "runtime/Training.h"
#include "runtime/CompiledModel.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cuda/CudaEmitter.h"
#include "compiler/codegen/cuda/HostEmulation.h"
#include "compiler/codegen/cuda/HostEmulationExecutor.h"
#include "compiler/codegen/cuda/Nvrtc.h"
#include "runtime/CudaDevice.h"
#include "runtime/System.h"
#include "compiler/frontend/MLIRGen.h"
#include "compiler/reference/GradCheck.h"
#include "compiler/transforms/Passes.h"
#include "compiler/transforms/Pipeline.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/ViewOpGraph.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <malloc.h>
#include <sys/stat.h>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace nnc;
using namespace nnc::driver;

namespace {

int runCheck(const Args &args);
int runCompile(const Args &args);
int notYet(const Args &args);
int runGradcheck(const Args &args);

const char *kEmitKinds = "ast|nn|grad|train|fused|loops|llvm|asm|cuda|ptx|dot|fused-dot";

const std::vector<Command> &commands() {
  static const std::vector<Command> table = {
      {"check",
       "nnc check FILE",
       "Parse and verify a model; print a summary and the memory training takes.",
       {{"verify-diagnostics", nullptr, "Check diagnostics against expected-error annotations in FILE"},
        {"batch", "N", "Batch size for the memory figures (default: the train section's, or 32)"}},
       runCheck},
      {"compile",
       "nnc compile FILE --emit=KIND [-o OUT]",
       "Compile a model and print one stage of its IR.",
       {{"emit", "KIND",
         "Stage to print: ast|nn|grad|train|fused|loops|llvm|asm|cuda|ptx, or a Graphviz graph: "
         "dot (the model) or fused-dot (the training step's kernels)"},
        {"cuda-arch", "SM", "GPU architecture for --emit=ptx (default: the device's, or sm_90)"},
        {"stats", nullptr,
         "Print op and parameter counts to stderr; with fused|loops|llvm|asm "
         "also kernels, bytes moved and peak memory per step, fused and not"},
        {"locs", nullptr, "Print the source location of every op"},
        {"batch", "N", "Fix the batch size for --emit=loops|llvm|asm (default: any, given at run time)"},
        {"data-parallel", nullptr,
         "The training step of a data-parallel run (gradients combined over ranks by "
         "nn.all_reduce)"},
        {"mlir-print-ir-after-all", nullptr, "Print the IR after every pass of every stage to stderr"},
        {"mlir-timing", nullptr, "Print the time each pass takes to stderr"},
        {"o", "OUT", "Write to OUT instead of standard output"}},
       runCompile},
      {"train",
       "nnc train FILE [options]",
       "Train a model on its data (the model's train section, overridable).",
       {{"data", "PATH",
         "Training data: a path (MNIST or CIFAR-10 directory, CSV, .npz, .npy directory, image "
         "folder) or KIND(\"path\") (default: the train section's)"},
        {"test", "PATH", "A separate test set, given as --data is"},
        {"epochs", "N", "Number of epochs"},
        {"batch", "N", "Mini-batch size"},
        {"lr", "X", "Learning rate"},
        {"seed", "N", "Random seed (initialization, shuffling, dropout)"},
        {"threads", "N", "Threads for parallel loops (default: every core)"},
        {"target", "T", "cpu|cuda|auto|reference (default auto: cuda with a device, else cpu)"},
        {"cuda-arch", "SM", "GPU architecture for --target=cuda (default: the device's)"},
        {"checkpoint", "PATH", "Save a safetensors checkpoint after every epoch"},
        {"resume", nullptr, "Continue from --checkpoint"},
        {"metrics", "PATH",
         "Write per-epoch metrics, with a run id and the settings, to a CSV file (or JSON lines: "
         ".json, .jsonl)"},
        {"append", nullptr, "Append to the --metrics file instead of starting it again"},
        {"schedule", "CALL",
         "Learning-rate schedule, e.g. cosine(t_max=10) (instead of the train section's; none: off)"},
        {"patience", "N", "Stop early after N epochs without improvement of --monitor"},
        {"monitor", "M", "loss (default) or accuracy of the validation or test set"},
        {"min-delta", "X", "Smallest change that counts as an improvement (default 0)"},
        {"save-best", "PATH", "Keep the checkpoint of the best epoch (by --monitor) at PATH"},
        {"top-k", "K", "Report top-K accuracy beside top-1 (default 5)"},
        {"quiet", nullptr, "Print errors and the last epoch's line only"},
        {"verbose", nullptr, "Print every epoch, and the share of time spent loading data"},
        {"limit", "N", "Use only the first N training samples"},
        {"validation", "X", "Hold out this fraction of the training data for evaluation"},
        {"init-from", "FILE",
         "Start from a PyTorch state_dict saved as safetensors (PyTorch names, see docs/language.md)"},
        {"strict", nullptr, "With --init-from: a missing, unexpected or reshaped tensor is an error"},
        {"freeze", "NAMES",
         "Hold these tensors fixed (names or prefixes, comma-separated; instead of the train section's)"},
        {"distributed", "MODE",
         "auto (default: a data-parallel run when mpirun or srun started more than one rank; gradients combined by "
         "MPI on the CPU, by NCCL with --target=cuda), mpi, nccl (CUDA devices, one rank per GPU) or none"},
        {"global-batch", "N", "Rows per step over all ranks (instead of --batch per rank); the ranks must divide it"},
        {"verify-replicas", nullptr, "Check after each epoch that every rank holds the same parameters and state"}},
       runTrain},
      {"eval",
       "nnc eval FILE (--checkpoint PATH | --init-from FILE) [--data PATH]",
       "Evaluate a trained model on its test data.",
       {{"checkpoint", "PATH", "Checkpoint file"},
        {"init-from", "FILE", "Weights from a PyTorch state_dict saved as safetensors"},
        {"strict", nullptr, "With --init-from: a missing, unexpected or reshaped tensor is an error"},
        {"data", "PATH", "Data, given as for train (default: the train section's)"},
        {"test", "PATH", "A separate test set, given as --data is"},
        {"top-k", "K", "Report top-K accuracy beside top-1 (default 5)"},
        {"quiet", nullptr, "Only the summary line: no per-class accuracy or confusion matrix"},
        {"target", "T", "cpu|cuda|auto|reference"}},
       runEval},
      {"predict",
       "nnc predict FILE (--checkpoint PATH | --init-from FILE) --input FILE.csv [-o OUT]",
       "Run a trained model on the rows of a CSV file.",
       {{"checkpoint", "PATH", "Checkpoint file"},
        {"init-from", "FILE", "Weights from a PyTorch state_dict saved as safetensors"},
        {"strict", nullptr, "With --init-from: a missing, unexpected or reshaped tensor is an error"},
        {"input", "FILE", "CSV file: one row per sample, the model's input values in order"},
        {"o", "OUT", "Write the predictions to OUT (default: standard output)"},
        {"target", "T", "cpu|cuda|auto|reference"}},
       runPredict},
      {"import",
       "nnc import MODEL.onnx [-o MODEL.nn] [--loss L --labels NAME]",
       "Write an ONNX model as a .nn file, with its weights as safetensors beside it (for --init-from).",
       {{"o", "FILE.nn", "The model to write (default: the ONNX file's name); weights go to FILE.safetensors"},
        {"loss", "L",
         "The loss the model minimizes (an ONNX graph has none): auto (default: softmax_cross_entropy "
         "for class scores, else mse), softmax_cross_entropy, mse, binary_cross_entropy or none"},
        {"labels", "NAME", "With --loss: the name of the labels or targets input (default y)"}},
       runImport},
      {"summary",
       "nnc summary FILE",
       "Print the model layer by layer: op, output shape, parameters and FLOPs per sample, with totals.",
       {},
       runSummary},
      {"inspect",
       "nnc inspect FILE.safetensors",
       "List the tensors of a safetensors file (a checkpoint or PyTorch weights) with shapes and statistics.",
       {},
       runInspect},
      {"plot",
       "nnc plot METRICS -o CURVES.png|svg",
       "Draw the train and validation or test loss (and accuracy) of a --metrics file against epochs, with gnuplot.",
       {{"o", "FILE", "The picture to write: .png or .svg"}},
       runPlot},
      {"data",
       "nnc data FILE -o SAMPLES.npz [options]",
       "Write the first samples of the data, after the train section's transforms, to an .npz file.",
       {{"data", "PATH", "Data, given as for train (default: the train section's)"},
        {"test", "PATH", "A separate test set, given as --data is"},
        {"split", "S", "train (default: all transforms, as epoch --epoch draws them) or test (the deterministic ones)"},
        {"epoch", "N", "The epoch whose random transforms to draw (default 1)"},
        {"count", "N", "Samples to write (default 16)"},
        {"seed", "N", "Seed (default: the train section's)"},
        {"o", "FILE", "The .npz file to write (one array per model input)"}},
       runData},
      {"export",
       "nnc export FILE --checkpoint PATH -o FILE.safetensors|FILE.onnx",
       "Write a checkpoint's weights under PyTorch's state_dict names and layouts.",
       {{"checkpoint", "PATH", "Checkpoint file"},
        {"format", "F",
         "pt (default: PyTorch's state_dict names and layouts, as safetensors) or onnx (the evaluation graph "
         "with its weights, opset 13; the default for -o FILE.onnx)"},
        {"o", "FILE", "The file to write"}},
       runExport},
      {"build",
       "nnc build FILE [-o EXE] [options]  |  nnc build FILE --lib [--checkpoint C] [-o libNAME]",
       "Build a standalone training executable (for this machine's CPU, or a CUDA GPU).",
       {{"o", "EXE", "Output executable (default: the model file's name); with --lib the libraries' name"},
        {"lib", nullptr,
         "An inference library instead: OUT.a, OUT.so and the C header OUT.h (model_create, "
         "model_predict, model_destroy)"},
        {"checkpoint", "PATH", "With --lib: the weights to build in (else read from a file at model_create)"},
        {"data-parallel", nullptr,
         "A program that trains data-parallel when mpirun or srun starts it on several "
         "ranks (gradients combined by Open MPI, or by NCCL with --target=cuda)"},
        {"cpu", "CPU",
         "With --lib: native (default: this machine's CPU), or x86-64-v2|v3|v4 for older machines "
         "(checked when the library loads)"},
        {"lr", "X", "Learning rate, instead of the train section's"},
        {"target", "T", "cpu|cuda|auto (default cpu; auto: cuda with a device)"},
        {"cuda-arch", "SM", "GPU architecture for --target=cuda (default: the device's, or sm_90)"}},
       runBuild},
      {"gradcheck",
       "nnc gradcheck FILE [options]",
       "Compare symbolic gradients with finite differences.",
       {{"seed", "N", "Seed for the parameters and random inputs (default 1)"},
        {"batch", "N", "Size of symbolic dimensions such as B (default 3)"},
        {"samples", "N",
         "Elements checked per parameter (default 32, fewer where the loss is slow to evaluate; 0 = all)"},
        {"tolerance", "X", "Largest relative error accepted (default 1e-4)"},
        {"inputs", nullptr, "Also check gradients with respect to f32 inputs"},
        {"target", "T",
         "Where the gradients are computed: reference (default, double "
         "precision), cpu (the compiled, fused code) or cuda-host (the CUDA kernels, "
         "compiled for this CPU and run block by block, thread by thread: no GPU needed)"}},
       runGradcheck},
      {"bench",
       "nnc bench FILE [options]  |  nnc bench --kernel SPEC [options]",
       "Time a model's training step, or one op at a named shape, kernel by kernel (synthetic data).",
       {{"batch", "N", "Batch size (default: the train section's; 1 with --infer)"},
        {"steps", "N", "Steps timed (default 20)"},
        {"warmup", "N", "Steps run first, untimed (default 3)"},
        {"threads", "N", "Worker threads (default: every core)"},
        {"format", "F", "table (default), json or csv"},
        {"no-fusion", nullptr, "Every op a kernel of its own (to measure what fusion gains)"},
        {"target", "T", "cpu (default), or cuda: the CUDA kernels on device 0, each launch timed between events"},
        {"cuda-arch", "SM", "GPU architecture for --target=cuda (default: the device's)"},
        {"kernel", "SPEC",
         "One op at a shape: gemm:MxNxK | conv2d:N,C,H,W,O,K[,S[,P]] | elementwise:N:EXPR (of x, y, z) | "
         "reduction:RxC[:AXIS] | softmax_ce:NxC"},
        {"backward", nullptr, "With --kernel: the op's forward and backward pass (a training step)"},
        {"infer", nullptr, "Time the model's inference function (what nnc predict and nnc build --lib run) instead"}},
       runBench},
      {"tune",
       "nnc tune FILE [options]",
       "Time the blocking choices of each product and convolution of a model's training step; keep the fastest for "
       "this CPU.",
       {{"batch", "N", "Batch size (default: the train section's)"},
        {"steps", "N", "Steps timed per round (default 3)"},
        {"warmup", "N", "Steps run first in each round, untimed (default 1)"},
        {"threads", "N", "Worker threads (default: every core)"}},
       runTune},
  };
  return table;
}

void printTopHelp(llvm::raw_ostream &os) {
  os << "nnc: a neural-network compiler\n\nUsage: nnc COMMAND [options]\n\n"
        "Commands:\n";
  for (const Command &c : commands())
    os << "  " << llvm::left_justify(c.name, 10) << " " << c.summary
       << (c.run == notYet ? " (not available yet)" : "") << "\n";
  os << "\nRun 'nnc COMMAND --help' for a command's options.\n"
        "Exit codes: 0 success, 1 error in the input, 2 usage error.\n";
}

void printHelp(const Command &c, llvm::raw_ostream &os) {
  os << "Usage: " << c.usage << "\n\n" << c.summary << "\n";
  if (!c.options.empty())
    os << "\nOptions:\n";
  for (const OptionSpec &o : c.options) {
    std::string flag = std::string(o.name[1] ? "--" : "-") + o.name;
    if (o.value)
      flag += std::string(o.name[1] ? "=" : " ") + o.value;
    os << "  " << llvm::left_justify(flag, 24) << " " << o.help << "\n";
  }
  os << "  " << llvm::left_justify("--help", 24) << " Show this help\n";
}

/// Parses argv after the command name; returns an exit code on error.
std::optional<int> parseArgs(const Command &c, int argc, char **argv, Args &out) {
  for (int i = 0; i < argc; ++i) {
    llvm::StringRef arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      printHelp(c, llvm::outs());
      return kOk;
    }
    if (!arg.starts_with("-") || arg == "-") {
      out.positional.push_back(arg.str());
      continue;
    }
    llvm::StringRef body = arg.ltrim('-');
    auto [name, value] = body.split('=');
    bool hasValue = body.contains('=');
    const OptionSpec *spec = nullptr;
    for (const OptionSpec &o : c.options)
      if (name == o.name)
        spec = &o;
    if (!spec) {
      std::string hint;
      for (const OptionSpec &o : c.options)
        if (name.edit_distance(o.name) <= 2)
          hint = std::string("; did you mean '--") + o.name + "'?";
      return usageError("unknown option '" + arg.str() + "' for '" + c.name + "'" + hint, &c);
    }
    if (!spec->value) {
      if (hasValue)
        return usageError("option '--" + name.str() + "' takes no value", &c);
      out.options[spec->name] = "";
      continue;
    }
    if (!hasValue) {
      if (i + 1 >= argc)
        return usageError("option '" + arg.str() + "' needs a value (" + spec->value + ")", &c);
      value = argv[++i];
    }
    out.options[spec->name] = value.str();
  }
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// Loading a model
//===----------------------------------------------------------------------===//

/// A one-line summary of a lowered model.
void summarize(mlir::ModuleOp module, llvm::raw_ostream &os) {
  auto fn = *module.getOps<mlir::func::FuncOp>().begin();
  std::map<std::string, unsigned> counts;
  int64_t values = 0;
  for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
    auto role = fn.getArgAttrOfType<mlir::StringAttr>(i, nnc::nn::attr::kRole);
    ++counts[role.str()];
    auto type = llvm::cast<mlir::RankedTensorType>(fn.getArgument(i).getType());
    if (role.getValue() == "param")
      values += type.getNumElements();
  }
  unsigned ops = 0;
  fn.walk([&](mlir::Operation *op) { ops += op->getDialect() &&
                                            op->getDialect()->getNamespace() == "nn"; });
  bool hasLoss = false;
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (auto role = fn.getResultAttrOfType<mlir::StringAttr>(i, nnc::nn::attr::kRole))
      hasLoss |= role.getValue() == "loss";
  os << "model " << fn.getName() << ": " << counts["input"] << " inputs, "
     << counts["param"] << " parameters (" << values << " values), "
     << counts["frozen"] + counts["state"] << " frozen/state tensors, " << ops
     << " ops, " << fn.getNumResults() - hasLoss << " outputs"
     << (hasLoss ? ", minimizes a loss" : "") << "\n";
}

/// check's memory line: what training takes at the batch size (--batch,
/// else the train section's), from the CPU backend's memory plan. Models
/// without a loss have no training step; nothing is printed for them.
int printMemory(const Args &args, Session &s, mlir::ModuleOp module) {
  auto fn = *module.getOps<mlir::func::FuncOp>().begin();
  bool hasLoss = false;
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    if (auto role = fn.getResultAttrOfType<mlir::StringAttr>(i, nnc::nn::attr::kRole))
      hasLoss |= role.getValue() == "loss";
  if (!hasLoss)
    return kOk;
  int64_t batch = 32;
  if (auto train = module->getAttrOfType<mlir::DictionaryAttr>(nnc::nn::attr::kTrain))
    if (auto b = llvm::dyn_cast_or_null<mlir::IntegerAttr>(train.get("batch")))
      batch = b.getInt();
  if (auto rc = numberOption(args, command("check"), "batch", batch))
    return *rc;
  mlir::PassManager pm(&s.ctx);
  buildPipeline(pm, Stage::Train);
  if (mlir::failed(pm.run(module)))
    return kUserError;
  auto code = mlir::ModuleOp::create(fn.getLoc());
  auto desc = cpu::compileModel(module, fn.getName(), code, /*profile=*/false, /*fuse=*/true);
  code->erase();
  if (mlir::failed(desc))
    return kUserError;
  rt::StepMemory m = rt::stepMemory(*desc, batch, rt::kEvalChunk);
  llvm::outs() << "memory: " << m.describe(batch, rt::kEvalChunk) << "\n";
  return kOk;
}

int runCheck(const Args &args) {
  const Command &c = command("check");
  if (auto rc = needFile(c, args))
    return *rc;
  Session s;
  if (!s.open(args.positional[0]))
    return kUserError;
  if (args.has("verify-diagnostics")) {
    mlir::SourceMgrDiagnosticVerifierHandler handler(s.sourceMgr, &s.ctx);
    if (auto file = parseSource(s.sourceMgr, s.ctx))
      (void)mlirGen(s.ctx, *file, args.positional[0]);
    return mlir::succeeded(handler.verify()) ? kOk : kUserError;
  }
  mlir::SourceMgrDiagnosticHandler handler(s.sourceMgr, &s.ctx);
  auto file = parseSource(s.sourceMgr, s.ctx);
  if (!file)
    return kUserError;
  auto module = mlirGen(s.ctx, *file, args.positional[0]);
  if (!module)
    return kUserError;
  llvm::outs() << args.positional[0] << ": ok: ";
  summarize(*module, llvm::outs());
  return printMemory(args, s, *module);
}

/// Totals of a kernel table (lowerToLoops' `nnc.kernels`) at a batch size.
struct KernelTotals {
  size_t kernels = 0;
  double flops = 0, bytes = 0, peak = 0;
  size_t inPlace = 0;   // results stored over the argument they replace
  double inPlaceBytes = 0;
};

KernelTotals totals(mlir::ModuleOp loops, int64_t batch) {
  KernelTotals t;
  auto kernel = loops.lookupSymbol<mlir::func::FuncOp>("kernel");
  auto at = [&](mlir::Attribute a) {
    llvm::ArrayRef<int64_t> v = llvm::cast<mlir::DenseI64ArrayAttr>(a).asArrayRef();
    return static_cast<double>(v[0]) * static_cast<double>(batch) + static_cast<double>(v[1]);
  };
  for (mlir::Attribute a : kernel->getAttrOfType<mlir::ArrayAttr>("nnc.kernels")) {
    auto d = llvm::cast<mlir::DictionaryAttr>(a);
    ++t.kernels;
    t.flops += at(d.get("flops"));
    t.bytes += at(d.get("bytes"));
  }
  llvm::ArrayRef<int64_t> slots = kernel->getAttrOfType<mlir::DenseI64ArrayAttr>("nnc.slots").asArrayRef();
  for (size_t i = 0; i + 1 < slots.size(); i += 2)
    t.peak += static_cast<double>(slots[i] * batch + slots[i + 1]);
  // Buffers: arguments, results, then the cache, the rng block and the
  // batch size.
  llvm::ArrayRef<int64_t> inPlace = kernel->getAttrOfType<mlir::DenseI64ArrayAttr>("nnc.inplace").asArrayRef();
  auto types = kernel.getArgumentTypes();
  size_t cacheAt = llvm::find_if(types, [](mlir::Type t) { return t.isIndex(); }) - types.begin() - 2;
  for (size_t r = 0; r < inPlace.size(); ++r)
    if (inPlace[r] >= 0) {
      auto m = llvm::cast<mlir::MemRefType>(types[cacheAt - inPlace.size() + r]);
      ++t.inPlace;
      t.inPlaceBytes += static_cast<double>(m.getNumElements() * 4);
    }
  return t;
}

/// --emit=fused: every kernel of the step with its members and their DSL
/// locations, in execution order.
void printKernels(mlir::ModuleOp loops, mlir::func::FuncOp fn, int64_t batch, llvm::raw_ostream &os) {
  auto kernel = loops.lookupSymbol<mlir::func::FuncOp>("kernel");
  os << "// kernels of the compiled step, in order (sizes at batch " << batch << ")\n";
  for (auto [i, a] : llvm::enumerate(kernel->getAttrOfType<mlir::ArrayAttr>("nnc.kernels"))) {
    auto d = llvm::cast<mlir::DictionaryAttr>(a);
    llvm::ArrayRef<int64_t> bytes = llvm::cast<mlir::DenseI64ArrayAttr>(d.get("bytes")).asArrayRef();
    auto members = llvm::cast<mlir::ArrayAttr>(d.get("members"));
    std::string ops = llvm::cast<mlir::StringAttr>(d.get("ops")).getValue().str();
    os << llvm::format("kernel %zu: %s (%zu op%s, %.1f KiB moved)\n", i, ops.c_str(), members.size(),
                       members.size() == 1 ? "" : "s",
                       (static_cast<double>(bytes[0]) * batch + static_cast<double>(bytes[1])) / 1024);
    for (mlir::Attribute m : members)
      os << "  " << llvm::cast<mlir::StringAttr>(m).getValue() << "\n";
  }
  KernelTotals t = totals(loops, batch);
  os << llvm::format("// %zu kernels, %.1f KiB moved, %.1f KiB of intermediates at the peak\n",
                     t.kernels, t.bytes / 1024, t.peak / 1024);
  // Which new values overwrite the tensors they replace, and which cannot
  // (the old value is still read after the new one is computed).
  std::string inPlace, copied;
  llvm::ArrayRef<int64_t> at = kernel->getAttrOfType<mlir::DenseI64ArrayAttr>("nnc.inplace").asArrayRef();
  for (unsigned r = 0; r < fn.getNumResults(); ++r) {
    auto name = fn.getResultAttrOfType<mlir::StringAttr>(r, nnc::nn::attr::kName);
    bool replaces = false;
    for (unsigned a = 0; a < fn.getNumArguments(); ++a)
      replaces |= name && fn.getArgAttrOfType<mlir::StringAttr>(a, nnc::nn::attr::kName) == name;
    if (replaces)
      (r < at.size() && at[r] >= 0 ? inPlace : copied) += " " + name.str();
  }
  if (!inPlace.empty())
    os << "// updated in place:" << inPlace << "\n";
  if (!copied.empty())
    os << "// written to a buffer of their own:" << copied << "\n";
}

/// --stats for the compiled step: kernels, bytes moved (estimated from the
/// shapes) and the memory plan's size, with and without fusion.
void printFusionStats(mlir::ModuleOp fused, mlir::ModuleOp unfused, int64_t batch,
                      llvm::raw_ostream &os) {
  KernelTotals f = totals(fused, batch), u = totals(unfused, batch);
  os << llvm::format("step at batch %lld: %zu kernels fused (%zu unfused, %.1fx fewer); "
                     "%.1f KiB moved (%.1f unfused); peak intermediates %.1f KiB (%.1f unfused); "
                     "%.3f MFLOP; %zu state tensors updated in place (%.1f KiB not copied)\n",
                     static_cast<long long>(batch), f.kernels, u.kernels,
                     f.kernels ? static_cast<double>(u.kernels) / static_cast<double>(f.kernels) : 0.0,
                     f.bytes / 1024, u.bytes / 1024, f.peak / 1024, u.peak / 1024, f.flops / 1e6, f.inPlace,
                     f.inPlaceBytes / 1024);
}

int runCompile(const Args &args) {
  const Command &c = command("compile");
  if (auto rc = needFile(c, args))
    return *rc;
  std::string emit = args.get("emit", "nn");
  llvm::SmallVector<llvm::StringRef> kinds;
  llvm::StringRef(kEmitKinds).split(kinds, '|');
  if (!llvm::is_contained(kinds, emit))
    return usageError("unknown --emit kind '" + emit + "'; expected one of " + kEmitKinds, &c);
  bool device = emit == "cuda" || emit == "ptx";
  bool host = device || emit == "fused" || emit == "fused-dot" || emit == "loops" || emit == "llvm" || emit == "asm";
  int64_t batch = 0;
  if (auto rc = numberOption(args, c, "batch", batch))
    return *rc;
  Session s;
  if (!s.open(args.positional[0]))
    return kUserError;
  mlir::SourceMgrDiagnosticHandler handler(s.sourceMgr, &s.ctx);
  auto file = parseSource(s.sourceMgr, s.ctx);
  if (!file)
    return kUserError;
  // The whole output is produced before the file is kept, so a failure never
  // leaves a half-written OUT behind.
  std::string text;
  llvm::raw_string_ostream os(text);
  mlir::OwningOpRef<mlir::ModuleOp> module;
  if (emit == "ast") {
    dumpAST(*file, os);
  } else {
    module = mlirGen(s.ctx, *file, args.positional[0]);
    if (!module)
      return kUserError;
    if (args.has("data-parallel")) {
      mlir::NamedAttrList train;
      if (auto t = (*module)->getAttrOfType<mlir::DictionaryAttr>(nnc::nn::attr::kTrain))
        train.append(t.getValue());
      train.set("distributed", mlir::BoolAttr::get(&s.ctx, true));
      (*module)->setAttr(nnc::nn::attr::kTrain, train.getDictionary(&s.ctx));
    }
    bool hasLoss = false;
    module->walk([&](mlir::func::FuncOp fn) {
      for (unsigned i = 0; i < fn.getNumResults(); ++i)
        if (auto role = fn.getResultAttrOfType<mlir::StringAttr>(i, nnc::nn::attr::kRole))
          hasLoss |= role.getValue() == "loss";
    });
    if ((emit == "grad" || emit == "train") && !hasLoss) {
      llvm::errs() << "nnc: error: --emit=" << emit << " needs a model that minimizes a loss; '"
                   << args.positional[0] << "' has no 'minimize'\n";
      return kUserError;
    }
    codegen::setInstrumentation({args.has("mlir-print-ir-after-all"), args.has("mlir-timing")});
    mlir::PassManager pm(&s.ctx);
    codegen::instrument(pm);
    Stage stage = emit == "nn" || emit == "dot" ? Stage::Nn : emit == "grad" ? Stage::Grad : Stage::Train;
    buildPipeline(pm, hasLoss ? stage : Stage::Nn);
    if (mlir::failed(pm.run(*module)))
      return kUserError;
    if (host) {
      // The training step (or, for a model without a loss, the model), for
      // every batch size, or for --batch alone.
      auto fn = *module->getOps<mlir::func::FuncOp>().begin();
      if (hasLoss)
        fn = module->lookupSymbol<mlir::func::FuncOp>((fn.getName() + "_train_step").str());
      auto loops = cpu::buildLoops(fn, batch ? std::optional<int64_t>(batch) : std::nullopt);
      if (mlir::failed(loops))
        return kUserError;
      // Sizes for the report: --batch, the train section's, or 64.
      int64_t at = batch;
      if (!at)
        if (auto train = (*module)->getAttrOfType<mlir::DictionaryAttr>(nnc::nn::attr::kTrain))
          if (auto b = llvm::dyn_cast_or_null<mlir::IntegerAttr>(train.get("batch")))
            at = b.getInt();
      at = at ? at : 64;
      if (device) {
        codegen::BatchScaling scaling;
        auto prepared = codegen::prepare(fn, batch ? std::optional<int64_t>(batch) : std::nullopt,
                                     /*fuse=*/true, &scaling);
        if (mlir::failed(prepared))
          return kUserError;
        auto prepFn = *(*prepared)->getOps<mlir::func::FuncOp>().begin();
        auto code = cuda::emitCuda(prepFn, scaling, /*skipUnsupported=*/true);
        if (mlir::failed(code))
          return kUserError;
        for (const std::string &k : code->skipped)
          llvm::errs() << "nnc: warning: kernel " << k << " is not generated for CUDA yet\n";
        if (emit == "cuda") {
          os << code->source;
          for (const std::string &k : code->skipped)
            os << "// not generated yet: " << k << "\n";
        } else {
          // The device's architecture, or sm_90 without one.
          std::string arch = args.get("cuda-arch", "");
          if (arch.empty()) {
            rt::CudaDevice d = rt::probeCudaDevice();
            arch = d.present ? d.arch() : "sm_90";
          }
          cuda::NvrtcResult r =
              cuda::compileCached(code->source, fn.getName().str() + ".cu", arch, {}, cuda::defaultCacheDir());
          if (!r.ok) {
            llvm::errs() << "nnc: error: " << r.error << "\n";
            if (!r.log.empty())
              llvm::errs() << r.log << "\n";
            return kUserError;
          }
          os << r.ptx;
        }
      } else if (emit == "fused-dot") {
        // The fused graph as Graphviz: each kernel a cluster of its ops.
        auto fusedGraph = codegen::prepare(fn, batch ? std::optional<int64_t>(batch) : std::nullopt,
                                           /*fuse=*/true);
        if (mlir::failed(fusedGraph))
          return kUserError;
        mlir::PassManager graph(&s.ctx);
        graph.addPass(mlir::createPrintOpGraphPass(os));
        if (mlir::failed(graph.run(**fusedGraph)))
          return kUserError;
      } else if (emit == "fused") {
        printKernels(**loops, fn, at, os);
        // The fused graph both backends lower: nn.kernel ops in order.
        auto fusedGraph = codegen::prepare(fn, batch ? std::optional<int64_t>(batch) : std::nullopt,
                                       /*fuse=*/true);
        if (mlir::failed(fusedGraph))
          return kUserError;
        // With the CPU's blocking choices (nnc.tiling) on its products and
        // convolutions.
        mlir::PassManager tiling(&s.ctx);
        codegen::instrument(tiling);
        tiling.nest<mlir::func::FuncOp>().addPass(createChooseTiling());
        if (mlir::failed(tiling.run(**fusedGraph)))
          return kUserError;
        mlir::OpPrintingFlags flags;
        if (args.has("locs"))
          flags.enableDebugInfo(true, /*prettyForm=*/false).useLocalScope();
        (*fusedGraph)->print(os, flags);
      }
      if (args.has("stats") && !device) {
        summarize(*module, llvm::errs()); // the model, before its IR is replaced
        auto unfused = cpu::buildLoops(fn, batch ? std::optional<int64_t>(batch) : std::nullopt,
                                       /*fuse=*/false);
        if (mlir::failed(unfused))
          return kUserError;
        printFusionStats(**loops, **unfused, at, llvm::errs());
      }
      module = std::move(*loops);
      if (emit == "fused" || emit == "fused-dot" || device) {
        // The report, graph or source above is the output.
      } else if (emit != "loops") {
        if (mlir::failed(cpu::lowerToLLVM(*module)))
          return kUserError;
        auto code = cpu::emitHostCode(*module, emit == "asm");
        if (mlir::failed(code))
          return kUserError;
        os << *code;
      }
    }
    if (emit == "dot") {
      // The model as Graphviz (MLIR's op-graph printer): values as edges.
      mlir::PassManager graph(&s.ctx);
      graph.addPass(mlir::createPrintOpGraphPass(os));
      if (mlir::failed(graph.run(*module)))
        return kUserError;
    } else if (!host || emit == "loops") { // (--emit=fused printed its report above)
      mlir::OpPrintingFlags flags;
      if (args.has("locs"))
        flags.enableDebugInfo(true, /*prettyForm=*/false).useLocalScope();
      module->print(os, flags);
    }
  }
  if (args.has("stats") && module && !host)
    summarize(*module, llvm::errs());
  return writeOutput(args.get("o", "-"), text);
}

int runGradcheck(const Args &args) {
  const Command &c = command("gradcheck");
  if (auto rc = needFile(c, args))
    return *rc;
  ref::GradCheckOptions opts;
  for (auto rc : {numberOption(args, c, "seed", opts.seed),
                  numberOption(args, c, "batch", opts.batch),
                  numberOption(args, c, "samples", opts.samples),
                  numberOption(args, c, "tolerance", opts.tolerance)})
    if (rc)
      return *rc;
  opts.wrtInputs = args.has("inputs");
  opts.samplesGiven = args.has("samples");
  std::string target = args.get("target", "reference");
  if (target != "cpu" && target != "reference" && target != "cuda-host")
    return usageError("unknown --target '" + target + "' for gradcheck (reference, cpu or cuda-host)", &c);
  Session s;
  // Compiled code refers to the session's context: destroyed before it.
  std::unique_ptr<ref::Executor> executor;
  if (target == "cpu")
    executor = cpu::createExecutor();
  else if (target == "cuda-host")
    executor = cuda::createHostEmulationExecutor(NNC_CXX);
  opts.executor = executor.get();
  if (!s.open(args.positional[0]))
    return kUserError;
  mlir::SourceMgrDiagnosticHandler handler(s.sourceMgr, &s.ctx);
  auto file = parseSource(s.sourceMgr, s.ctx);
  if (!file)
    return kUserError;
  auto module = mlirGen(s.ctx, *file, args.positional[0]);
  if (!module)
    return kUserError;
  auto report = ref::gradcheck(*module, opts, llvm::outs());
  if (mlir::failed(report))
    return kUserError;
  return report->passed ? kOk : kUserError;
}

int notYet(const Args &) { return kUserError; }

} // namespace

namespace nnc::driver {

int usageError(const std::string &msg, const Command *c) {
  llvm::errs() << "nnc: error: " << msg << "\n";
  llvm::errs() << "Run 'nnc " << (c ? std::string(c->name) + " " : "")
               << "--help' for usage.\n";
  return kUsageError;
}

int writeOutput(const std::string &path, llvm::StringRef text) {
  if (path == "-") {
    llvm::outs() << text;
    llvm::outs().flush();
    if (llvm::outs().has_error()) {
      std::error_code ec = llvm::outs().error();
      llvm::outs().clear_error();
      return userError("cannot write to standard output: " + ec.message());
    }
    return kOk;
  }
  // A device or a pipe (/dev/null, /dev/stdout) is written into, never
  // replaced; anything else that is not a regular file is refused.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode))) {
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
    if (!ec) {
      os << text;
      os.close();
      ec = os.error();
      os.clear_error();
    }
    return ec ? userError(path + ": writing the output failed: " + ec.message()) : kOk;
  }
  if (nnc::rt::Status s = nnc::rt::checkOutputPath(path, "the output"); !s)
    return userError(s.message());
  llvm::SmallString<128> tmp;
  int fd = -1;
  if (std::error_code ec = llvm::sys::fs::createUniqueFile(path + ".%%%%%%.tmp", fd, tmp))
    return userError(path + ": cannot write the output: " + ec.message());
  std::error_code ec;
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << text;
    os.close();
    ec = os.error();
    os.clear_error();
  }
  if (!ec)
    ec = llvm::sys::fs::rename(tmp, path);
  if (ec) {
    llvm::sys::fs::remove(tmp);
    return userError(path + ": writing the output failed: " + ec.message());
  }
  return kOk;
}

int userError(const llvm::Twine &msg) {
  llvm::errs() << "nnc: error: " << msg << "\n";
  return kUserError;
}

std::optional<int> needFile(const Command &c, const Args &args) {
  if (args.positional.size() != 1)
    return usageError(args.positional.empty()
                          ? std::string("missing the model FILE")
                          : "expected one FILE, got " + std::to_string(args.positional.size()),
                      &c);
  return std::nullopt;
}

const Command &command(llvm::StringRef name) {
  for (const Command &c : commands())
    if (name == c.name)
      return c;
  llvm_unreachable("unknown command");
}

Session::Session() {
  ctx.loadDialect<nnc::nn::NNDialect, mlir::func::FuncDialect>();
  ctx.printOpOnDiagnostic(false);
}

bool Session::open(const std::string &path) {
  auto buf = llvm::MemoryBuffer::getFileOrSTDIN(path, /*IsText=*/true);
  if (std::error_code ec = buf.getError()) {
    llvm::errs() << "nnc: error: cannot read '" << path << "': " << ec.message() << "\n";
    return false;
  }
  std::string text = normalizeSource((*buf)->getBuffer());
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(text, (*buf)->getBufferIdentifier()), llvm::SMLoc());
  return true;
}

mlir::OwningOpRef<mlir::ModuleOp> Session::load(const std::string &path) {
  auto file = parseSource(sourceMgr, ctx);
  if (!file)
    return nullptr;
  return mlirGen(ctx, *file, path);
}

} // namespace nnc::driver

int main(int argc, char **argv) {
  // Training allocates and frees the same large tensors every step; keep
  // freed memory in the process instead of returning it to the kernel and
  // faulting it back in.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (argc < 2) {
    printTopHelp(llvm::errs());
    return kUsageError;
  }
  llvm::StringRef name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    printTopHelp(llvm::outs());
    return kOk;
  }
  if (name == "--version") {
    llvm::outs() << "nnc 0.1.0\n";
    return kOk;
  }
  for (const Command &c : commands()) {
    if (name != c.name)
      continue;
    Args args;
    if (auto rc = parseArgs(c, argc - 2, argv + 2, args))
      return *rc;
    if (c.run == notYet) {
      llvm::errs() << "nnc: error: '" << c.name
                   << "' is not available yet in this version of nnc\n";
      return kUserError;
    }
    // Allocation failures in nnc's own code end the command with a message
    // (a model too large for the memory check to foresee), never an abort.
    try {
      return c.run(args);
    } catch (const std::bad_alloc &) {
      return userError("out of memory running '" + std::string(c.name) + "' (" +
                       nnc::rt::formatBytes(nnc::rt::availableMemory()) + " available)");
    } catch (const std::length_error &e) {
      return userError(std::string("a size too large to allocate (") + e.what() + ")");
    }
  }
  std::string hint;
  for (const Command &c : commands())
    if (name.edit_distance(c.name) <= 2)
      hint = std::string("; did you mean '") + c.name + "'?";
  return usageError("unknown command '" + name.str() + "'" + hint);
}
