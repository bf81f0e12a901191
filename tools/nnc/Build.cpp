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

#include "runtime/Checkpoint.h"
#include "runtime/Deploy.h"
#include "runtime/StateDict.h"
#include "runtime/System.h"

#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/CompileModel.h"
#include "compiler/codegen/cuda/Nvrtc.h"
#include "compiler/transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstring>
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
  os << "};\n" << var << ".cache = " << f.cache << ";\n" << var << ".inPlace = {";
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
    os << "  {" << quoted(l.kernel) << ", " << quoted(l.what) << ", " << list(l.buffers) << ", " << l.threadsPerBatch
       << ", " << l.threadsFixed << ", " << (l.rng ? "true" : "false") << ", nnc::rt::Collective("
       << static_cast<int>(l.collective) << "), " << (l.waits ? "true" : "false") << "},\n";
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


/// Runs `argv` (a compiler, ar), its output to `log`; an error quotes it.
int runTool(const std::vector<std::string> &argv, const std::string &log, const std::string &what,
            const std::string &input = {}) {
  std::vector<llvm::StringRef> refs(argv.begin(), argv.end());
  std::optional<llvm::StringRef> redirects[] = {input.empty() ? std::nullopt : std::optional(llvm::StringRef(input)),
                                                llvm::StringRef(log), llvm::StringRef(log)};
  std::string error;
  int rc = llvm::sys::ExecuteAndWait(argv[0], refs, std::nullopt, redirects, 0, 0, &error);
  if (rc == 0)
    return kOk;
  std::ifstream l(log);
  std::string text((std::istreambuf_iterator<char>(l)), std::istreambuf_iterator<char>());
  return userError(what + " with " + argv[0] + " failed" + (error.empty() ? "" : ": " + error) +
                   (text.empty() ? "" : "\n" + text));
}

/// The x86-64 psABI's micro-architecture levels: the features each adds
/// that a loader can check (__builtin_cpu_supports names).
const std::vector<std::pair<const char *, std::vector<const char *>>> &cpuLevels() {
  static const std::vector<std::pair<const char *, std::vector<const char *>>> levels = {
      {"x86-64", {}},
      {"x86-64-v2", {"sse4.1", "sse4.2", "popcnt"}},
      {"x86-64-v3", {"avx", "avx2", "bmi", "bmi2", "fma"}},
      {"x86-64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}},
  };
  return levels;
}

/// The CPU features the object code was compiled for that a loader can
/// check (GCC's and clang's __builtin_cpu_supports names).
std::vector<std::string> checkableFeatures(llvm::StringRef features) {
  static const char *known[] = {"sse4.1", "sse4.2", "avx",      "avx2",     "fma",      "f16c",    "bmi",
                                "bmi2",   "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512vnni",
                                "avx512bf16"};
  std::vector<std::string> out;
  for (llvm::StringRef f : llvm::split(features, ','))
    if (f.consume_front("+"))
      for (const char *k : known)
        if (f == k)
          out.push_back(k);
  return out;
}

const char *kHeader = R"(/* Generated by nnc build --lib: the C API of model '%s'.
 *
 *   model_ctx *m = model_create(NULL);          // NULL: the weights built in
 *   float out[N * MODEL_OUTPUT_SIZE];
 *   model_predict(m, x, N, out);                // x: N * MODEL_INPUT_SIZE floats
 *   model_destroy(m);
 *
 * Contexts are independent: one per thread, or shared under a lock. Every
 * call returns 0 on success; model_error() says what failed. A thread that
 * calls model_predict needs 2 MiB of stack (some kernels keep a block of
 * up to 1 MiB there); the default threads of Linux have 8. model_create
 * runs one prediction: a context keeps what its kernels derive from the
 * weights alone (transformed weights, up to twice the weights' size), so
 * every model_predict runs at the same speed.
 */
#ifndef NNC_MODEL_H
#define NNC_MODEL_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
#define MODEL_INPUT_SIZE %lld  /* floats per sample of input '%s' */
#define MODEL_OUTPUT_SIZE %lld /* floats per sample of output '%s' */
typedef struct model_ctx model_ctx;
/* Weights from a safetensors file (an nnc checkpoint), or NULL for the
   weights built into the library. NULL on failure: see model_error(NULL). */
model_ctx *model_create(const char *weights);
void model_destroy(model_ctx *ctx);
int model_predict(model_ctx *ctx, const float *x, int64_t batch, float *out);
const char *model_error(const model_ctx *ctx);
const char *model_output_name(void);
/* The class count of a classifier (its output is per-class scores), else 0. */
int64_t model_classes(void);
#ifdef __cplusplus
}
#endif
#endif
)";

/// `nnc build --lib`: the evaluation function alone as object code, the
/// weights, the C API (runtime/Deploy.h) and the runtime, as a static and a
/// shared library with a header.
int buildLibrary(const Args &args, Loaded &m, const std::string &output) {
  std::string name = m.model.getName().str();
  OwningOpRef<ModuleOp> code = ModuleOp::create(m.model.getLoc());
  FailureOr<rt::ModelDesc> desc = cpu::compileModel(*m.module, name, *code);
  if (failed(desc))
    return kUserError;
  // Inference only: the training step's code is left out.
  code->lookupSymbol<func::FuncOp>(cpu::kTrainStepKernel).erase();
  std::string shims = shim(code->lookupSymbol<func::FuncOp>(cpu::kModelKernel), cpu::kModelKernel);
  if (failed(cpu::lowerToLLVM(*code)))
    return kUserError;
  std::string weights = args.get("checkpoint");
  if (!weights.empty()) { // checked now: a library never carries weights that do not fit
    std::vector<rt::HostTensor> tensors;
    rt::Metadata meta;
    if (rt::Status s = rt::loadCheckpoint(weights, tensors, meta); !s)
      return userError(s.message());
    for (const rt::TensorDesc &t : desc->model.args)
      if (t.role != "input" && std::none_of(tensors.begin(), tensors.end(), [&](const rt::HostTensor &h) {
            return h.name == t.name || h.name == rt::torchKey(t.name);
          }))
        return userError(weights + ": no tensor '" + t.name + "' (the checkpoint does not fit this model)");
  }
  llvm::SmallString<128> dir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nnc-build", dir))
    return userError("cannot create a scratch directory: " + ec.message());
  auto cleanup = llvm::make_scope_exit([&] { llvm::sys::fs::remove_directories(dir); });
  std::string object = (dir + "/model.o").str(), glueSource = (dir + "/api.cpp").str(),
              glueObject = (dir + "/api.o").str(), blob = (dir + "/weights.S").str(),
              blobObject = (dir + "/weights.o").str(), log = (dir + "/build.log").str();
  std::string cpuName = args.get("cpu", "native");
  if (failed(cpu::emitObjectFile(*code, object, cpuName)))
    return kUserError;
  // The weights as a section of the library (.incbin), not as source text.
  {
    std::ofstream f(blob);
    f << "  .section .rodata\n  .balign 64\n  .globl nnc_weights\nnnc_weights:\n";
    if (!weights.empty()) {
      llvm::SmallString<256> absolute(weights);
      llvm::sys::fs::make_absolute(absolute);
      f << "  .incbin " << quoted(absolute) << "\n";
    }
    f << "  .globl nnc_weights_end\nnnc_weights_end:\n  .section .note.GNU-stack,\"\",@progbits\n";
  }
  rt::ModelDesc d = *desc;
  int64_t classes = 0;
  for (const Input &in : m.inputs)
    if (in.integer && in.classes > 1)
      classes = in.classes;
  std::string outputName, inputName;
  for (size_t r = 0; r < d.model.results.size() && outputName.empty(); ++r)
    if (r != d.lossResult)
      outputName = d.model.results[r].name;
  for (const rt::TensorDesc &t : d.model.args)
    if (t.role == "input" && !t.integer && inputName.empty())
      inputName = t.name;
  // The CPU features the code was compiled for (this machine's), checked
  // when the library loads: on a CPU without them it refuses to run
  // instead of computing wrong numbers or faulting.
  std::vector<std::string> features;
  for (const auto &f : llvm::sys::getHostCPUFeatures())
    if (f.second)
      features.push_back("+" + f.first().str());
  std::string featureList;
  for (const std::string &f : features)
    featureList += (featureList.empty() ? "" : ",") + f;
  std::vector<std::string> checks = checkableFeatures(featureList);
  if (cpuName != "native") { // a level's features, cumulatively
    checks.clear();
    for (const auto &[level, features] : cpuLevels()) {
      checks.insert(checks.end(), features.begin(), features.end());
      if (cpuName == level)
        break;
    }
  }
  std::ostringstream glue;
  glue << "// Generated by nnc build --lib from " << m.path << ".\n"
       << "#include \"runtime/Deploy.h\"\n#include <cstdint>\n#include <cstring>\n#include <fstream>\n"
       << "#include <iterator>\n#include <new>\n#include <string>\n\n"
       << shims << "extern \"C\" const char nnc_weights[], nnc_weights_end[];\n"
       << "namespace {\nconst nnc::rt::ModelDesc &desc() {\n  static nnc::rt::ModelDesc m = [] {\n"
       << "    nnc::rt::ModelDesc m;\n    m.name = " << quoted(name) << ";\n"
       << describe(d.model, "m.model") << "    m.model.call = call_" << cpu::kModelKernel << ";\n"
       << "    m.lossResult = " << d.lossResult << ";\n    m.trainStep = m.model;\n    return m;\n  }();\n"
       << "  return m;\n}\nthread_local std::string lastError; // model_create's, per thread\n"
       << "/// Empty when this CPU has every feature the code was compiled for.\nstd::string missingFeatures() {\n"
       << "  std::string missing;\n  __builtin_cpu_init();\n";
  for (const std::string &f : checks)
    glue << "  if (!__builtin_cpu_supports(\"" << f << "\"))\n    missing += \" " << f << "\";\n";
  glue << "  return missing;\n}\n} // namespace\n\n"
       << "struct model_ctx {\n  std::unique_ptr<nnc::rt::deploy::Context> c;\n};\n\nextern \"C\" {\n"
       << "model_ctx *model_create(const char *weights) {\n"
       << "  if (std::string missing = missingFeatures(); !missing.empty()) {\n"
       << "    lastError = \"this library was built for a CPU with" ;
  for (const std::string &f : checks)
    glue << " " << f;
  glue << "; this CPU lacks\" + missing;\n    return nullptr;\n  }\n"
       << "  std::string bytes, where = weights ? weights : \"the built-in weights\";\n"
       << "  if (weights) {\n    std::ifstream in(weights, std::ios::binary);\n"
       << "    if (!in) {\n      lastError = where + \": cannot open the file\";\n      return nullptr;\n    }\n"
       << "    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());\n"
       << "  } else {\n    bytes.assign(nnc_weights, nnc_weights_end);\n"
       << "    if (bytes.empty()) {\n      lastError = \"the library has no weights built in (nnc build --lib "
          "--checkpoint); give a file\";\n      return nullptr;\n    }\n  }\n"
       << "  try {\n    auto c = nnc::rt::deploy::create(desc(), bytes, where, lastError);\n"
       << "    if (!c)\n      return nullptr;\n    return new model_ctx{std::move(c)};\n"
       << "  } catch (const std::bad_alloc &) {\n    lastError = \"out of memory\";\n    return nullptr;\n  }\n}\n"
       << "void model_destroy(model_ctx *ctx) { delete ctx; }\n"
       << "int model_predict(model_ctx *ctx, const float *x, int64_t batch, float *out) {\n"
       << "  if (!ctx || !x || !out) {\n    lastError = \"model_predict: a null argument\";\n    return 1;\n  }\n"
       << "  try {\n    nnc::rt::Status s = nnc::rt::deploy::predict(*ctx->c, x, batch, out);\n"
       << "    if (!s) {\n      ctx->c->error = s.message();\n      return 1;\n    }\n    return 0;\n"
       << "  } catch (const std::bad_alloc &) {\n    ctx->c->error = \"out of memory\";\n    return 1;\n  }\n}\n"
       << "const char *model_error(const model_ctx *ctx) {\n"
       << "  return ctx ? ctx->c->error.c_str() : lastError.c_str();\n}\n"
       << "const char *model_output_name(void) { return " << quoted(outputName) << "; }\n"
       << "int64_t model_classes(void) { return " << classes << "; }\n}\n";
  {
    std::ofstream f(glueSource);
    f << glue.str();
    if (!f)
      return userError("cannot write '" + glueSource + "'");
  }
  // Position-independent objects, then the archive (with the runtime's
  // objects) and the shared library.
  if (int rc = runTool({NNC_CXX, "-std=c++20", "-O2", "-fPIC", "-I", NNC_SOURCE_DIR, "-c", glueSource, "-o", glueObject},
                       log, "compiling the library's API"))
    return rc;
  if (int rc = runTool({NNC_CXX, "-c", blob, "-o", blobObject}, log, "assembling the weights"))
    return rc;
  std::string header = output + ".h", staticLib = output + ".a", sharedLib = output + ".so";
  std::string ompDir = llvm::sys::path::parent_path(NNC_LIBOMP).str();
  std::string script = (dir + "/ar.mri").str();
  {
    std::ofstream f(script);
    f << "create " << staticLib << ".partial\naddlib " << NNC_RUNTIME_LIB << "\naddmod " << object << "\naddmod "
      << glueObject << "\naddmod " << blobObject << "\nsave\nend\n";
  }
  llvm::sys::fs::remove(staticLib + ".partial");
  auto ar = llvm::sys::findProgramByName("ar");
  if (!ar)
    return userError("no 'ar' to make " + staticLib + " (Debian's binutils)");
  if (int rc = runTool({*ar, "-M"}, log, "archiving " + staticLib, script); rc)
    return rc;
  std::vector<std::string> link = {NNC_CXX, "-shared", "-o", sharedLib + ".partial", object, glueObject, blobObject,
                                   NNC_RUNTIME_LIB, "-L" + ompDir, "-lomp", "-Wl,-rpath," + ompDir,
                                   "-lzip", "-lpng", "-ljpeg", "-lz", "-lm"};
  for (llvm::StringRef flag : llvm::split(llvm::StringRef(NNC_LINK_FLAGS), ' '))
    if (!flag.empty())
      link.push_back(flag.str());
  if (int rc = runTool(link, log, "linking " + sharedLib); rc) {
    llvm::sys::fs::remove(staticLib + ".partial");
    return rc;
  }
  std::string headerText;
  {
    int64_t in = rt::deploy::inputSize(d), out = rt::deploy::outputSize(d);
    std::vector<char> buf(std::strlen(kHeader) + 512 + name.size() + inputName.size() + outputName.size());
    std::snprintf(buf.data(), buf.size(), kHeader, name.c_str(), static_cast<long long>(in), inputName.c_str(),
                  static_cast<long long>(out), outputName.c_str());
    headerText = buf.data();
  }
  // Everything is in place before any of the three appears.
  if (int rc = writeOutput(header, headerText))
    return rc;
  for (const std::string &f : {staticLib, sharedLib})
    if (std::error_code ec = llvm::sys::fs::rename(f + ".partial", f))
      return userError("cannot write '" + f + "': " + ec.message());
  llvm::outs() << "built " << staticLib << ", " << sharedLib << " and " << header << ": model '" << name
               << "' for inference (" << (weights.empty() ? "weights from a file at model_create" : "weights built in")
               << "); link the static library with -lstdc++ -L" << ompDir << " -lomp -lzip -lpng -ljpeg -lz -lm\n";
  return kOk;
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
  if (args.has("data-parallel") && args.has("lib"))
    return usageError("--data-parallel builds a training program, not a library", &c);
  if (int rc = load(input, lr, m, true, std::nullopt, args.has("data-parallel")))
    return rc;
  SourceMgrDiagnosticHandler handler(m.session.sourceMgr, &m.session.ctx);
  if (std::string cpu = args.get("cpu", "native"); cpu != "native") {
    if (std::none_of(cpuLevels().begin(), cpuLevels().end(), [&](const auto &l) { return cpu == l.first; }))
      return usageError("--cpu must be native, x86-64, x86-64-v2, x86-64-v3 or x86-64-v4, got '" + cpu + "'", &c);
    if (!args.has("lib"))
      return usageError("--cpu applies to --lib", &c);
  }
  if (args.has("lib")) {
    if (target != "cpu")
      return usageError("--lib builds for the CPU", &c);
    return buildLibrary(args, m, args.has("o") ? args.get("o") : "lib" + llvm::sys::path::stem(input).str());
  }
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
  if (args.has("data-parallel")) {
    auto i = m.lossResult();
    bool summed = i && lossIsSum(m.model.front().getTerminator()->getOperand(*i));
    glue << "m.dataParallel = true;\nm.lossIsSum = " << (summed ? "true" : "false") << ";\n";
  }
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
