//===- Build.cpp - nnc build: standalone training executables -------------===//
//
// Compiles a model's training step and evaluation function ahead of time
// (the CPU backend's code, for this machine's CPU, as the JIT would run it)
// into an object file, writes a small C++ file describing their buffers,
// initializers and train settings (runtime/Aot.h), and links both with the
// runtime library. The executable needs neither MLIR nor LLVM: only the C++
// runtime and the OpenMP runtime the parallel loops call.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/Model.h"

#include "compiler/codegen/cpu/CpuExecutor.h"
#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/Specialize.h"
#include "compiler/reference/Evaluator.h"

#include "mlir/IR/Diagnostics.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <fstream>
#include <sstream>

using namespace mlir;
using namespace nnc;
using namespace nnc::driver;

namespace {

std::string quoted(llvm::StringRef s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\')
      out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", static_cast<unsigned char>(ch));
      out += buf;
      continue;
    }
    out += ch;
  }
  return out + "\"";
}

std::string number(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

/// The C++ description of one compiled function: tensor tables and slots.
/// Sizes proportional to the batch are written as -(size per element).
FailureOr<std::string> describe(func::FuncOp fn, func::FuncOp kernel, const std::string &var) {
  OwningOpRef<func::FuncOp> unit(cast<func::FuncOp>(fn->clone()));
  if (failed(cpu::specializeBatch(*unit, 1)))
    return failure();
  std::ostringstream os;
  auto tensor = [&](Type generic, Type atOne, StringAttr name, StringAttr role) {
    auto g = cast<RankedTensorType>(generic), one = cast<RankedTensorType>(atOne);
    os << "  {" << quoted(name ? name.getValue() : "") << ", " << quoted(role ? role.getValue() : "")
       << ", " << (g.getElementType().isInteger(32) ? "true" : "false") << ", {";
    for (int64_t i = 0; i < g.getRank(); ++i)
      os << (i ? ", " : "") << (g.isDynamicDim(i) ? -one.getDimSize(i) : g.getDimSize(i));
    os << "}},\n";
  };
  os << var << ".args = {\n";
  for (unsigned i = 0; i < fn.getNumArguments(); ++i)
    tensor(fn.getArgumentTypes()[i], unit->getArgumentTypes()[i],
           fn.getArgAttrOfType<StringAttr>(i, nn::attr::kName),
           fn.getArgAttrOfType<StringAttr>(i, nn::attr::kRole));
  os << "};\n" << var << ".results = {\n";
  for (unsigned i = 0; i < fn.getNumResults(); ++i)
    tensor(fn.getResultTypes()[i], unit->getResultTypes()[i],
           fn.getResultAttrOfType<StringAttr>(i, nn::attr::kName),
           fn.getResultAttrOfType<StringAttr>(i, nn::attr::kRole));
  os << "};\n" << var << ".slots = {";
  for (auto [i, v] : llvm::enumerate(
           kernel->getAttrOfType<DenseI64ArrayAttr>("nnc.slots").asArrayRef()))
    os << (i ? ", " : "") << v;
  os << "};\n";
  return os.str();
}

/// `extern "C"` declaration and the array-taking shim of one kernel.
std::string shim(func::FuncOp kernel, llvm::StringRef name) {
  unsigned buffers = 0, slots = 0;
  bool afterBatch = false;
  for (Type t : kernel.getArgumentTypes()) {
    if (t.isIndex())
      afterBatch = true;
    else
      ++(afterBatch ? slots : buffers);
  }
  std::ostringstream os;
  os << "extern \"C\" void " << name.str() << "(";
  for (unsigned i = 0; i < buffers; ++i)
    os << "void *, ";
  os << "int64_t";
  for (unsigned i = 0; i < slots; ++i)
    os << ", void *";
  os << ");\nstatic void call_" << name.str() << "(void **b, int64_t n, void **s) {\n  "
     << name.str() << "(";
  for (unsigned i = 0; i < buffers; ++i)
    os << "b[" << i << "], ";
  os << "n";
  for (unsigned i = 0; i < slots; ++i)
    os << ", s[" << i << "]";
  os << ");\n}\n";
  return os.str();
}

int fail(const llvm::Twine &message) {
  llvm::errs() << "nnc: error: " << message << "\n";
  return kUserError;
}

} // namespace

int nnc::driver::runBuild(const Args &args) {
  const Command &c = command("build");
  if (auto rc = needFile(c, args))
    return *rc;
  std::string target = args.get("target", "cpu");
  if (target == "cuda")
    return fail("--target=cuda is not available in this version of nnc");
  if (target != "cpu" && target != "auto")
    return usageError("--target must be cpu, cuda or auto, got '" + target + "'", &c);
  std::optional<double> lr;
  double lrValue = 0;
  if (auto rc = numberOption(args, c, "lr", lrValue))
    return *rc;
  if (args.has("lr"))
    lr = lrValue;
  std::string input = args.positional[0];
  std::string output = args.get("o");
  if (output.empty())
    output = llvm::sys::path::stem(input).str();

  Loaded m;
  if (int rc = load(input, lr, m))
    return rc;
  SourceMgrDiagnosticHandler handler(m.session.sourceMgr, &m.session.ctx);
  std::string name = m.model.getName().str();
  auto step = m.module->lookupSymbol<func::FuncOp>(name + "_train_step");
  if (!step)
    return fail("no training step for model '" + name + "'");

  // The code: both functions in one module, lowered like the JIT's.
  OwningOpRef<ModuleOp> code = ModuleOp::create(m.model.getLoc());
  if (failed(cpu::addLoops(step, std::nullopt, *code, "nnc_train_step")) ||
      failed(cpu::addLoops(m.model, std::nullopt, *code, "nnc_model")))
    return kUserError;
  auto stepKernel = code->lookupSymbol<func::FuncOp>("nnc_train_step");
  auto modelKernel = code->lookupSymbol<func::FuncOp>("nnc_model");
  auto stepDesc = describe(step, stepKernel, "m.trainStep");
  auto modelDesc = describe(m.model, modelKernel, "m.model");
  if (failed(stepDesc) || failed(modelDesc))
    return kUserError;
  std::string shims = shim(stepKernel, "nnc_train_step") + shim(modelKernel, "nnc_model");

  // The description: initializers and train settings.
  std::ostringstream glue;
  glue << "// Generated by nnc build from " << input << ".\n"
       << "#include \"runtime/Aot.h\"\n\n#include <cstdint>\n\n"
       << shims << "\nint main(int argc, char **argv) {\n"
       << "using nnc::rt::aot::ModelDesc;\nModelDesc m;\n"
       << "m.name = " << quoted(name) << ";\n"
       << "m.trainStep.call = call_nnc_train_step;\nm.model.call = call_nnc_model;\n"
       << *stepDesc << *modelDesc << "m.lossResult = " << *m.lossResult() << ";\n"
       << "m.inits.resize(" << m.model.getNumArguments() << ");\n";
  for (unsigned i = 0; i < m.model.getNumArguments(); ++i) {
    auto role = m.model.getArgAttrOfType<StringAttr>(i, nn::attr::kRole);
    if (role && role.getValue() == "input")
      continue;
    auto spec = ref::initSpec(m.model, i);
    if (failed(spec))
      return kUserError;
    glue << "m.inits[" << i << "].kind = " << quoted(spec->kind) << ";\n";
    for (auto &[k, v] : spec->args)
      glue << "m.inits[" << i << "].args[" << quoted(k) << "] = " << number(v) << ";\n";
    glue << "m.inits[" << i << "].fanIn = " << spec->fanIn << ";\nm.inits[" << i
         << "].fanOut = " << spec->fanOut << ";\n";
    if (!spec->literal.empty()) {
      glue << "m.inits[" << i << "].literal = {";
      for (auto [k, v] : llvm::enumerate(spec->literal))
        glue << (k ? ", " : "") << number(v);
      glue << "};\n";
    }
  }
  glue << "m.epochs = " << m.setting("epochs", 1) << ";\nm.batch = " << m.setting("batch", 32)
       << ";\nm.seed = " << m.setting("seed", 0) << "u;\nm.validation = "
       << number(m.real("validation", 0)) << ";\n";
  if (m.train)
    if (auto s = dyn_cast_or_null<BoolAttr>(m.train.get("shuffle")))
      glue << "m.shuffle = " << (s.getValue() ? "true" : "false") << ";\n";
  rt::DataSource source;
  if (m.train && m.train.get("data")) {
    Args none;
    if (int rc = dataSource(m, none, source))
      return rc;
    llvm::SmallString<256> absolute(source.path);
    llvm::sys::fs::make_absolute(absolute);
    glue << "m.dataKind = " << quoted(source.kind) << ";\nm.dataPath = " << quoted(absolute)
         << ";\n";
  }
  glue << "return nnc::rt::aot::main(m, argc, argv);\n}\n";

  // Object code, the description, and the link, in a scratch directory; the
  // executable appears at its path only when complete.
  if (failed(cpu::lowerToLLVM(*code)))
    return kUserError;
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nnc-build", dir))
    return fail("cannot create a scratch directory: " + ec.message());
  auto cleanup = llvm::make_scope_exit([&] { llvm::sys::fs::remove_directories(dir); });
  std::string object = (dir + "/model.o").str(), source_ = (dir + "/main.cpp").str(),
              log = (dir + "/link.log").str();
  if (failed(cpu::emitObjectFile(*code, object)))
    return kUserError;
  {
    std::ofstream f(source_);
    f << glue.str();
    if (!f)
      return fail("cannot write '" + source_ + "'");
  }
  llvm::SmallString<256> partial(output);
  partial += ".partial";
  std::string ompDir = llvm::sys::path::parent_path(NNC_LIBOMP).str();
  std::vector<std::string> argv = {NNC_CXX, "-std=c++20", "-O1", "-I", NNC_SOURCE_DIR, source_,
                                   object, NNC_RUNTIME_LIB, "-L" + ompDir, "-lomp",
                                   "-Wl,-rpath," + ompDir, "-lm", "-o", std::string(partial)};
  std::vector<llvm::StringRef> argRefs(argv.begin(), argv.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string error;
  int rc = llvm::sys::ExecuteAndWait(NNC_CXX, argRefs, std::nullopt, redirects, 0, 0, &error);
  if (rc != 0) {
    llvm::sys::fs::remove(partial);
    std::ifstream l(log);
    std::string text((std::istreambuf_iterator<char>(l)), std::istreambuf_iterator<char>());
    return fail("linking '" + output + "' with " + NNC_CXX + " failed" +
                (error.empty() ? "" : ": " + error) + (text.empty() ? "" : "\n" + text));
  }
  if (std::error_code ec = llvm::sys::fs::rename(partial, output)) {
    llvm::sys::fs::remove(partial);
    return fail("cannot write '" + output + "': " + ec.message());
  }
  llvm::outs() << "built " << output << ": trains model '" << name
               << "' (run it with --help for its options)\n";
  return kOk;
}
