//===- Build.cpp - nnc build: standalone training executables -------------===//
//
// Compiles a model's training step and evaluation function ahead of time
// (the CPU backend's code, for this machine's CPU, as the JIT would run it)
// into an object file, writes a small C++ file describing their buffers,
// initializers and train settings (runtime/Aot.h), and links both with the
// runtime library. The executable needs neither MLIR nor LLVM: only the C++
// runtime and the OpenMP runtime the parallel loops call. With
// --target=cuda the code is the CUDA modules' PTX, written into the C++
// file; the executable opens the driver with dlopen where it runs.
//
//===----------------------------------------------------------------------===//

#include "tools/nnc/ModelFile.h"

#include "runtime/System.h"

#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cuda/Nvrtc.h"

#include "mlir/IR/Diagnostics.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
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

/// C++ statements that fill `var` (an rt::FunctionDesc) but its kernel.
std::string describe(const rt::FunctionDesc &f, const std::string &var) {
  std::ostringstream os;
  auto tensors = [&](const char *field, const std::vector<rt::TensorDesc> &ts) {
    os << var << "." << field << " = {\n";
    for (const rt::TensorDesc &t : ts) {
      os << "  {" << quoted(t.name) << ", " << quoted(t.role) << ", "
         << (t.integer ? "true" : "false") << ", {";
      for (size_t i = 0; i < t.shape.size(); ++i)
        os << (i ? ", " : "") << t.shape[i];
      os << "}, " << t.classes << ", " << number(t.value) << "},\n";
    }
    os << "};\n";
  };
  tensors("args", f.args);
  tensors("results", f.results);
  os << var << ".slots = {";
  for (size_t i = 0; i < f.slots.size(); ++i)
    os << (i ? ", " : "") << f.slots[i];
  os << "};\n" << var << ".inPlace = {";
  for (size_t i = 0; i < f.inPlace.size(); ++i)
    os << (i ? ", " : "") << f.inPlace[i];
  os << "};\n";
  if (f.cuda.empty())
    return os.str();
  // The CUDA module: its image (PTX) in pieces, its launches and buffers.
  const rt::CudaCode &k = f.cuda;
  auto list = [&](const auto &v) {
    std::string out = "{";
    for (size_t i = 0; i < v.size(); ++i)
      out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "}";
  };
  os << var << ".cuda.image =\n";
  for (size_t at = 0; at < k.image.size(); at += 4096)
    os << "  " << quoted(llvm::StringRef(k.image).substr(at, 4096)) << "\n";
  if (k.image.empty())
    os << "  \"\"\n";
  os << ";\n" << var << ".cuda.launches = {\n";
  for (const rt::CudaLaunch &l : k.launches)
    os << "  {" << quoted(l.kernel) << ", " << quoted(l.what) << ", " << list(l.buffers) << ", "
       << l.threadsPerBatch << ", " << l.threadsFixed << ", " << (l.rng ? "true" : "false") << "},\n";
  os << "};\n"
     << var << ".cuda.buffers = " << list(k.buffers) << ";\n"
     << var << ".cuda.slots = " << list(k.slots) << ";\n"
     << var << ".cuda.results = " << list(k.results) << ";\n"
     << var << ".cuda.blockSize = " << k.blockSize << ";\n"
     << var << ".cuda.maxBlocks = " << k.maxBlocks << ";\n";
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

} // namespace

int nnc::driver::runBuild(const Args &args) {
  const Command &c = command("build");
  if (auto rc = needFile(c, args))
    return *rc;
  std::string target = args.get("target", "cpu");
  if (target == "auto")
    target = autoTarget();
  if (target != "cpu" && target != "cuda")
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
  // Before any work: the build replaces OUT, which must be a regular file.
  if (rt::Status s = rt::checkOutputPath(output, "the executable"); !s)
    return userError(s.message());

  Loaded m;
  if (int rc = load(input, lr, m))
    return rc;
  SourceMgrDiagnosticHandler handler(m.session.sourceMgr, &m.session.ctx);
  std::string name = m.model.getName().str();

  // The code: both functions in one module, lowered like the JIT's, or
  // both as CUDA modules (PTX, loaded by the driver where the binary runs).
  bool gpu = target == "cuda";
  OwningOpRef<ModuleOp> code = ModuleOp::create(m.model.getLoc());
  FailureOr<rt::ModelDesc> desc = failure();
  std::string shims, arch;
  if (gpu) {
    CudaCode cuda;
    std::string why;
    if (cuda::nvrtcVersion(&why).empty())
      return userError("--target=cuda: " + why);
    arch = cudaArch(args);
    if (int rc = compileCuda(m, arch, cuda))
      return rc;
    desc = std::move(cuda.desc);
  } else {
    desc = cpu::compileModel(*m.module, name, *code);
    if (failed(desc))
      return kUserError;
    shims = shim(code->lookupSymbol<func::FuncOp>(cpu::kTrainStepKernel), cpu::kTrainStepKernel) +
            shim(code->lookupSymbol<func::FuncOp>(cpu::kModelKernel), cpu::kModelKernel);
  }

  // The description: initializers and train settings.
  std::ostringstream glue;
  glue << "// Generated by nnc build from " << input << ".\n"
       << "#include \"runtime/Aot.h\"\n\n#include <cstdint>\n\n"
       << shims << "\nint main(int argc, char **argv) {\n"
       << "nnc::rt::ModelDesc m;\n"
       << "m.name = " << quoted(name) << ";\n";
  if (!gpu)
    glue << "m.trainStep.call = call_" << cpu::kTrainStepKernel << ";\n"
         << "m.model.call = call_" << cpu::kModelKernel << ";\n";
  glue << describe(desc->trainStep, "m.trainStep") << describe(desc->model, "m.model")
       << "m.lossResult = " << desc->lossResult << ";\n"
       << "m.inits.resize(" << desc->inits.size() << ");\n";
  for (size_t i = 0; i < desc->inits.size(); ++i) {
    const rt::InitSpec &spec = desc->inits[i];
    if (spec.kind.empty())
      continue;
    glue << "m.inits[" << i << "].kind = " << quoted(spec.kind) << ";\n";
    for (auto &[k, v] : spec.args)
      glue << "m.inits[" << i << "].args[" << quoted(k) << "] = " << number(v) << ";\n";
    glue << "m.inits[" << i << "].fanIn = " << spec.fanIn << ";\nm.inits[" << i
         << "].fanOut = " << spec.fanOut << ";\n";
    if (spec.loaded)
      glue << "m.inits[" << i << "].loaded = true;\n";
    if (!spec.literal.empty()) {
      glue << "m.inits[" << i << "].literal = {";
      for (size_t k = 0; k < spec.literal.size(); ++k)
        glue << (k ? ", " : "") << number(spec.literal[k]);
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
    for (auto [kind, path, field] : {std::tuple{&source.kind, &source.path, "data"},
                                     std::tuple{&source.testKind, &source.testPath, "test"}}) {
      if (path->empty())
        continue;
      llvm::SmallString<256> absolute(*path);
      llvm::sys::fs::make_absolute(absolute);
      glue << "m." << field << "Kind = " << quoted(*kind) << ";\nm." << field << "Path = " << quoted(absolute)
           << ";\n";
    }
  }
  // Schedules, transforms and early stopping as the train section says.
  glue << "m.transforms = " << quoted(m.text("transform")) << ";\nm.schedule = " << quoted(m.text("schedule"))
       << ";\nm.patience = " << m.setting("patience", 0) << ";\nm.topK = " << m.setting("top_k", 5)
       << ";\nm.minDelta = " << number(m.real("min_delta", 0)) << ";\n";
  if (!m.text("monitor").empty())
    glue << "m.monitor = " << quoted(m.text("monitor")) << ";\n";
  glue << "return nnc::rt::aot::main(m, argc, argv);\n}\n";

  // Object code, the description, and the link, in a scratch directory; the
  // executable appears at its path only when complete.
  if (!gpu && failed(cpu::lowerToLLVM(*code)))
    return kUserError;
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nnc-build", dir))
    return userError("cannot create a scratch directory: " + ec.message());
  auto cleanup = llvm::make_scope_exit([&] { llvm::sys::fs::remove_directories(dir); });
  std::string object = (dir + "/model.o").str(), source_ = (dir + "/main.cpp").str(),
              log = (dir + "/link.log").str();
  if (!gpu && failed(cpu::emitObjectFile(*code, object)))
    return kUserError;
  {
    std::ofstream f(source_);
    f << glue.str();
    if (!f)
      return userError("cannot write '" + source_ + "'");
  }
  llvm::SmallString<256> partial(output);
  partial += ".partial";
  std::string ompDir = llvm::sys::path::parent_path(NNC_LIBOMP).str();
  std::vector<std::string> argv = {NNC_CXX, "-std=c++20", "-O1", "-I", NNC_SOURCE_DIR, source_};
  if (gpu)
    argv.insert(argv.end(), {NNC_RUNTIME_LIB, "-ldl"});
  else
    argv.insert(argv.end(), {object, NNC_RUNTIME_LIB, "-L" + ompDir, "-lomp", "-Wl,-rpath," + ompDir});
  for (llvm::StringRef flag : llvm::split(llvm::StringRef(NNC_LINK_FLAGS), ' '))
    if (!flag.empty())
      argv.push_back(flag.str());
  // The data formats' libraries (runtime/CMakeLists.txt).
  argv.insert(argv.end(), {"-lzip", "-lpng", "-ljpeg", "-lz", "-lm", "-o", std::string(partial)});
  std::vector<llvm::StringRef> argRefs(argv.begin(), argv.end());
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(log),
                                                llvm::StringRef(log)};
  std::string error;
  int rc = llvm::sys::ExecuteAndWait(NNC_CXX, argRefs, std::nullopt, redirects, 0, 0, &error);
  if (rc != 0) {
    llvm::sys::fs::remove(partial);
    std::ifstream l(log);
    std::string text((std::istreambuf_iterator<char>(l)), std::istreambuf_iterator<char>());
    return userError("linking '" + output + "' with " + NNC_CXX + " failed" +
                (error.empty() ? "" : ": " + error) + (text.empty() ? "" : "\n" + text));
  }
  if (std::error_code ec = llvm::sys::fs::rename(partial, output)) {
    llvm::sys::fs::remove(partial);
    return userError("cannot write '" + output + "': " + ec.message());
  }
  llvm::outs() << "built " << output << ": trains model '" << name << "'"
               << (gpu ? " on a CUDA device (" + arch + " or newer)" : std::string()) << " (run it with --help for its options)\n";
  return kOk;
}
