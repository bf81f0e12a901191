//===- Jit.cpp - compiling and running CPU code in process ----------------===//

#include "compiler/codegen/cpu/Jit.h"
#include "runtime/Cache.h"
#include "runtime/Profile.h"

#include <unistd.h>

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MathToLibm/MathToLibm.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/OpenMPToLLVM/ConvertOpenMPToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToOpenMP/SCFToOpenMP.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVMPass.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"

#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SHA256.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"
#include "mlir/Target/LLVMIR/Export.h"

using namespace mlir;
using namespace nnc;

/// The function argument `ptr` is derived from (through address arithmetic
/// and memref descriptors), if any.
static BlockArgument rootPointer(Value ptr) {
  Value v = ptr;
  for (int steps = 0; steps < 64; ++steps) {
    if (auto arg = dyn_cast<BlockArgument>(v))
      return isa<LLVM::LLVMFuncOp>(arg.getOwner()->getParentOp()) && arg.getOwner()->isEntryBlock()
                 ? arg
                 : BlockArgument();
    Operation *op = v.getDefiningOp();
    if (auto gep = dyn_cast_or_null<LLVM::GEPOp>(op)) {
      v = gep.getBase();
    } else if (auto extract = dyn_cast_or_null<LLVM::ExtractValueOp>(op)) {
      // Find the value inserted at this position of the descriptor.
      Value container = extract.getContainer();
      Value found;
      while (auto insert = container.getDefiningOp<LLVM::InsertValueOp>()) {
        if (insert.getPosition() == extract.getPosition()) {
          found = insert.getValue();
          break;
        }
        container = insert.getContainer();
      }
      if (!found)
        return {};
      v = found;
    } else {
      return {};
    }
  }
  return {};
}

/// Gives every load, store and copy whose address derives from a `noalias`
/// pointer argument an alias scope of that argument, and declares it apart
/// from every other argument's scope. The facts `noalias` arguments state
/// survive this way in the loop bodies OpenMP outlines into functions of
/// their own, where LLVM would otherwise add run-time overlap checks to
/// every vectorized loop.
static void addAliasScopes(ModuleOp module) {
  MLIRContext *ctx = module.getContext();
  module.walk([&](LLVM::LLVMFuncOp fn) {
    if (fn.isExternal())
      return;
    auto domain = LLVM::AliasScopeDomainAttr::get(ctx, StringAttr::get(ctx, fn.getName()));
    llvm::MapVector<BlockArgument, LLVM::AliasScopeAttr> scopes; // argument order: the printed module (the cache key) is the same every run
    for (BlockArgument arg : fn.getArguments())
      if (fn.getArgAttr(arg.getArgNumber(), LLVM::LLVMDialect::getNoAliasAttrName()))
        scopes[arg] = LLVM::AliasScopeAttr::get(domain);
    if (scopes.size() < 2)
      return;
    fn.walk([&](LLVM::AliasAnalysisOpInterface op) {
      SmallVector<Value> addresses;
      for (Value operand : op->getOperands())
        if (isa<LLVM::LLVMPointerType>(operand.getType()))
          addresses.push_back(operand);
      SmallVector<Attribute> mine, others;
      for (Value address : addresses) {
        BlockArgument root = rootPointer(address);
        auto it = scopes.find(root);
        if (!root || it == scopes.end())
          return; // an address of unknown origin: leave the op alone
        if (!llvm::is_contained(mine, it->second))
          mine.push_back(it->second);
      }
      if (mine.empty())
        return;
      for (auto &[arg, scope] : scopes)
        if (!llvm::is_contained(mine, scope))
          others.push_back(scope);
      op.setAliasScopes(ArrayAttr::get(ctx, mine));
      op.setNoAliasScopes(ArrayAttr::get(ctx, others));
    });
  });
}

namespace {

/// exp, log, log1p, tanh, ... as polynomial approximations in arith ops
/// (MLIR's, within 2-3 ULPs over their range: tests/unit/CpuBackendTest.cpp,
/// CompiledMath), so loops over them vectorize: a libm call per element
/// does not, and MathToLLVM's log1p (log(1 + x)) loses every digit of
/// small arguments.
struct MathApproximation : PassWrapper<MathApproximation, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MathApproximation)
  StringRef getArgument() const override { return "nnc-math-approximation"; }
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(patterns);
    if (failed(applyPatternsAndFoldGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

std::unique_ptr<Pass> createMathApproximationPass() { return std::make_unique<MathApproximation>(); }

} // namespace

LogicalResult cpu::lowerToLLVM(ModuleOp module) {
  PassManager pm(module.getContext());
  pm.addPass(memref::createExpandStridedMetadataPass()); // reshapes become casts
  pm.addPass(arith::createArithExpandOpsPass());          // ceildiv, floordiv
  pm.addPass(createLowerAffinePass());
  pm.addPass(createConvertSCFToOpenMPPass()); // scf.parallel -> omp.parallel + wsloop
  pm.addPass(createMathApproximationPass());
  // Math first: what LLVM has no intrinsic for (tanh) becomes libm calls,
  // lane by lane for vectors (epilogues), through vector ops lowered next.
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createConvertVectorToLLVMPass()); // register-blocked kernels
  pm.addPass(createFinalizeMemRefToLLVMConversionPass()); // before CF: alloca scopes
  pm.addPass(createConvertSCFToCFPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  ConvertFuncToLLVMPassOptions funcOptions;
  funcOptions.useBarePtrCallConv = true;
  pm.addPass(createConvertFuncToLLVMPass(funcOptions));
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  if (failed(pm.run(module)))
    return failure();
  addAliasScopes(module);
  return success();
}

/// The host's target machine, at the highest optimization level; `pic` for
/// object files linked into position-independent executables.
static FailureOr<std::unique_ptr<llvm::TargetMachine>> hostMachine(ModuleOp module,
                                                                   bool pic = false) {
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    return module.emitError("cannot detect the host CPU: ") << llvm::toString(builder.takeError());
  builder->setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  if (pic)
    builder->setRelocationModel(llvm::Reloc::PIC_);
  auto tm = builder->createTargetMachine();
  if (!tm)
    return module.emitError("cannot create a target machine: ") << llvm::toString(tm.takeError());
  return std::move(*tm);
}

/// Translates to LLVM IR for the host's data layout and triple, as the JIT
/// does. (A JIT module translated this way with the host's features on every
/// function got FMA and 512-bit vectors but trained the MLP about 4x slower;
/// the cause is not isolated yet, so the JIT uses MLIR's own translation.)
static std::unique_ptr<llvm::Module> translateForHost(Operation *module,
                                                      llvm::LLVMContext &context,
                                                      llvm::TargetMachine &tm) {
  std::unique_ptr<llvm::Module> m = translateModuleToLLVMIR(module, context);
  if (!m)
    return nullptr;
  m->setDataLayout(tm.createDataLayout());
  m->setTargetTriple(tm.getTargetTriple().getTriple());
  return m;
}

FailureOr<std::unique_ptr<cpu::JitModule>> cpu::JitModule::compile(ModuleOp module) {
  static bool initialized = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)initialized;
  MLIRContext *ctx = module.getContext();
  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerOpenMPDialectTranslation(registry);
  ctx->appendDialectRegistry(registry);
  if (failed(lowerToLLVM(module)))
    return failure();

  auto tm = hostMachine(module);
  if (failed(tm))
    return failure();
  std::shared_ptr<llvm::TargetMachine> machine = std::move(*tm);

  // The object code cache: keyed by the LLVM-dialect module (printed
  // without locations), the CPU, its features and the LLVM version.
  std::string dir = rt::cacheDirectory(), path;
  if (!dir.empty()) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module.print(os);
    llvm::SHA256 hash;
    for (llvm::StringRef part : {llvm::StringRef("nnc-cpu-object-1"), llvm::StringRef(text),
                                 machine->getTargetCPU(), machine->getTargetFeatureString(),
                                 llvm::StringRef(LLVM_VERSION_STRING)}) {
      hash.update(part);
      hash.update(llvm::StringRef("\0", 1));
    }
    path = dir + "/cpu-" + llvm::toHex(hash.final(), /*LowerCase=*/true) + ".o";
    std::vector<std::string> names;
    for (auto fn : module.getOps<LLVM::LLVMFuncOp>())
      if (!fn.isExternal())
        names.push_back(fn.getName().str());
    if (auto cached = loadCached(path, *machine, names))
      return cached;
    llvm::sys::fs::remove(path); // absent, or it did not load: compiled over below
  }

  ExecutionEngineOptions options;
  options.enableObjectDump = !path.empty();
  options.transformer = makeOptimizingTransformer(3, 0, machine.get());
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  // Parallel loops call the OpenMP runtime.
  static const std::string omp = NNC_LIBOMP;
  static llvm::StringRef libs[] = {omp};
  options.sharedLibPaths = libs;
  auto engine = ExecutionEngine::create(module, options);
  if (!engine)
    return module.emitError("JIT compilation failed: ") << llvm::toString(engine.takeError());
  // Profiled code calls the runtime's timers.
  (*engine)->registerSymbols([](llvm::orc::MangleAndInterner interner) {
    llvm::orc::SymbolMap map;
    map[interner("nnc_profile_begin")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_begin),
                                          llvm::JITSymbolFlags::Exported};
    map[interner("nnc_profile_end")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_end),
                                        llvm::JITSymbolFlags::Exported};
    return map;
  });
  std::unique_ptr<JitModule> jit(new JitModule());
  jit->engine = std::move(*engine);
  if (!path.empty()) {
    // Compile now (the JIT compiles the whole module at its first lookup)
    // and keep the object: written aside, then renamed into place, so a
    // reader never sees half of one. A cache that cannot be written only
    // costs the next run its compile.
    for (auto fn : module.getOps<LLVM::LLVMFuncOp>())
      if (!fn.isExternal()) {
        (void)jit->prepare(fn.getName());
        break;
      }
    if (!llvm::sys::fs::create_directories(dir)) {
      std::string tmp = path + ".tmp" + std::to_string(::getpid());
      jit->engine->dumpToObjectFile(tmp);
      if (llvm::sys::fs::rename(tmp, path))
        llvm::sys::fs::remove(tmp);
    }
  }
  return jit;
}

std::unique_ptr<cpu::JitModule> cpu::JitModule::loadCached(llvm::StringRef path, llvm::TargetMachine &tm,
                                                           const std::vector<std::string> &names) {
  auto object = llvm::MemoryBuffer::getFile(path);
  if (!object)
    return nullptr;
  llvm::orc::JITTargetMachineBuilder jtmb(tm.getTargetTriple());
  jtmb.setCPU(tm.getTargetCPU().str());
  jtmb.addFeatures(std::vector<std::string>{tm.getTargetFeatureString().str()});
  auto created = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(std::move(jtmb)).create();
  if (!created) {
    llvm::consumeError(created.takeError());
    return nullptr;
  }
  std::unique_ptr<llvm::orc::LLJIT> lljit = std::move(*created);
  llvm::orc::JITDylib &lib = lljit->getMainJITDylib();
  char prefix = lljit->getDataLayout().getGlobalPrefix();
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(prefix);
  auto omp = llvm::orc::DynamicLibrarySearchGenerator::Load(NNC_LIBOMP, prefix);
  if (!process || !omp) {
    llvm::consumeError(process.takeError());
    llvm::consumeError(omp.takeError());
    return nullptr;
  }
  lib.addGenerator(std::move(*process));
  lib.addGenerator(std::move(*omp));
  llvm::orc::MangleAndInterner interner(lljit->getExecutionSession(), lljit->getDataLayout());
  llvm::orc::SymbolMap map;
  map[interner("nnc_profile_begin")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_begin),
                                        llvm::JITSymbolFlags::Exported};
  map[interner("nnc_profile_end")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_end),
                                      llvm::JITSymbolFlags::Exported};
  if (llvm::Error err = lib.define(llvm::orc::absoluteSymbols(std::move(map)))) {
    llvm::consumeError(std::move(err));
    return nullptr;
  }
  if (llvm::Error err = lljit->addObjectFile(std::move(*object))) {
    llvm::consumeError(std::move(err));
    return nullptr;
  }
  std::unique_ptr<JitModule> jit(new JitModule());
  jit->loaded = std::move(lljit);
  jit->fromCache = true;
  // Linking happens at the first lookup: every function must resolve.
  for (const std::string &name : names)
    if (failed(jit->prepare(name)))
      return nullptr;
  return jit;
}

namespace {

/// An LLVM-dialect module as LLVM IR for the host, optimized as the JIT
/// optimizes it, with the target machine that generates its code.
struct HostCode {
  std::unique_ptr<llvm::TargetMachine> machine;
  std::unique_ptr<llvm::Module> module;
};

FailureOr<HostCode> optimizeForHost(ModuleOp module, llvm::LLVMContext &context, bool pic) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerOpenMPDialectTranslation(registry);
  module.getContext()->appendDialectRegistry(registry);
  auto tm = hostMachine(module, pic);
  if (failed(tm))
    return failure();
  std::unique_ptr<llvm::Module> translated = translateForHost(module, context, **tm);
  HostCode code{std::move(*tm), std::move(translated)};
  if (!code.module)
    return module.emitError("translation to LLVM IR failed");
  if (pic)
    code.module->setPICLevel(llvm::PICLevel::BigPIC);
  if (llvm::Error err = makeOptimizingTransformer(3, 0, code.machine.get())(code.module.get()))
    return module.emitError("LLVM optimization failed: ") << llvm::toString(std::move(err));
  return code;
}

} // namespace

FailureOr<std::string> cpu::emitHostCode(ModuleOp module, bool asm_) {
  llvm::LLVMContext context;
  auto code = optimizeForHost(module, context, /*pic=*/false);
  if (failed(code))
    return failure();
  std::string text;
  llvm::raw_string_ostream os(text);
  if (!asm_) {
    code->module->print(os, nullptr);
    return text;
  }
  llvm::SmallString<0> buffer;
  llvm::raw_svector_ostream out(buffer);
  llvm::legacy::PassManager pm;
  if (code->machine->addPassesToEmitFile(pm, out, nullptr, llvm::CodeGenFileType::AssemblyFile))
    return module.emitError("the target cannot emit assembly");
  pm.run(*code->module);
  return std::string(buffer.str());
}

LogicalResult cpu::emitObjectFile(ModuleOp module, StringRef path) {
  llvm::LLVMContext context;
  auto code = optimizeForHost(module, context, /*pic=*/true);
  if (failed(code))
    return failure();
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return module.emitError("cannot write '") << path << "': " << ec.message();
  llvm::legacy::PassManager pm;
  if (code->machine->addPassesToEmitFile(pm, out, nullptr, llvm::CodeGenFileType::ObjectFile))
    return module.emitError("the target cannot emit object files");
  pm.run(*code->module);
  out.close();
  if (out.has_error())
    return module.emitError("cannot write '") << path << "'";
  return success();
}

cpu::JitModule::~JitModule() = default;

LogicalResult cpu::JitModule::prepare(StringRef name) {
  if (functions.count(name))
    return success();
  if (loaded) {
    // The packed wrapper the ExecutionEngine generated when the object was
    // first compiled.
    auto sym = loaded->lookup(("_mlir_" + name).str());
    if (!sym) {
      llvm::consumeError(sym.takeError());
      return failure();
    }
    functions[name] = sym->toPtr<void (*)(void **)>();
    return success();
  }
  auto fn = engine->lookupPacked(name);
  if (!fn) {
    llvm::consumeError(fn.takeError());
    return failure();
  }
  functions[name] = *fn;
  return success();
}

LogicalResult cpu::JitModule::call(StringRef name, ArrayRef<void *> buffers, int64_t batch,
                                  ArrayRef<void *> slots) {
  SmallVector<void *> storage(buffers.begin(), buffers.end());
  SmallVector<void *> slotStorage(slots.begin(), slots.end());
  SmallVector<void *> args;
  for (void *&p : storage)
    args.push_back(&p);
  args.push_back(&batch);
  for (void *&p : slotStorage)
    args.push_back(&p);
  // A symbol lookup per call would cost more than a small kernel.
  if (failed(prepare(name)))
    return failure();
  functions.lookup(name)(args.data());
  return success();
}
