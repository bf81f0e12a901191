//===- Jit.cpp - compiling and running CPU code in process ----------------===//

#include "compiler/codegen/cpu/Jit.h"
#include "compiler/codegen/cpu/LowerToLoops.h"
#include "compiler/transforms/Passes.h"
#include "compiler/codegen/common/CacheEntry.h"
#include "compiler/codegen/common/Prepare.h"
#include "runtime/Cache.h"
#include "runtime/Distributed.h"
#include "runtime/Profile.h"

#include <atomic>
#include <mutex>
#include <thread>
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
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"

#include "llvm/Analysis/InstructionSimplify.h"
#include "llvm/Analysis/LoopInfo.h"
#include "llvm/Analysis/ValueTracking.h"
#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/InstIterator.h"
#include "llvm/Linker/Linker.h"
#include "llvm/Transforms/Utils/CodeExtractor.h"
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
  StringRef getName() const override { return "MathApproximation"; }
  StringRef getDescription() const override { return "exp, log, tanh, ... as polynomials in arith ops"; }
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(patterns);
    if (failed(applyPatternsAndFoldGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

std::unique_ptr<Pass> createMathApproximationPass() { return std::make_unique<MathApproximation>(); }

} // namespace

namespace nnc {
#define GEN_PASS_DEF_ALIASSCOPES
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

namespace {
struct AliasScopesPass : nnc::impl::AliasScopesBase<AliasScopesPass> {
  void runOnOperation() override { addAliasScopes(getOperation()); }
};
} // namespace

void cpu::buildLLVMPipeline(OpPassManager &pm) {
  pm.addPass(createOutlineKernels());
  pm.addPass(createPartitionCode(PartitionCodeOptions{kCodePartitions}));
  // The rest on each partition, in parallel.
  OpPassManager &part = pm.nest<ModuleOp>();
  part.addPass(memref::createExpandStridedMetadataPass()); // reshapes become casts
  part.addPass(arith::createArithExpandOpsPass());          // ceildiv, floordiv
  part.addPass(createLowerAffinePass());
  part.addPass(createConvertSCFToOpenMPPass()); // scf.parallel -> omp.parallel + wsloop
  part.addPass(createMathApproximationPass());
  // Math first: what LLVM has no intrinsic for (tanh) becomes libm calls,
  // lane by lane for vectors (epilogues), through vector ops lowered next.
  part.addPass(createConvertMathToLLVMPass());
  part.addPass(createConvertMathToLibmPass());
  part.addPass(createConvertVectorToLLVMPass()); // register-blocked kernels
  part.addPass(createFinalizeMemRefToLLVMConversionPass()); // before CF: alloca scopes
  part.addPass(createConvertSCFToCFPass());
  part.addPass(createArithToLLVMConversionPass());
  part.addPass(createFinalizeMemRefToLLVMConversionPass());
  ConvertFuncToLLVMPassOptions funcOptions;
  funcOptions.useBarePtrCallConv = true;
  part.addPass(createConvertFuncToLLVMPass(funcOptions));
  part.addPass(createConvertControlFlowToLLVMPass());
  part.addPass(createConvertOpenMPToLLVMPass());
  part.addPass(createReconcileUnrealizedCastsPass());
  part.addPass(createAliasScopes());
}

LogicalResult cpu::lowerToLLVM(ModuleOp module) {
  PassManager pm(module.getContext());
  codegen::instrument(pm);
  buildLLVMPipeline(pm);
  return pm.run(module);
}

/// The host's target machine, at the highest optimization level; `pic` for
/// object files linked into position-independent executables.
static FailureOr<std::unique_ptr<llvm::TargetMachine>> hostMachine(ModuleOp module, bool pic = false,
                                                                   StringRef cpu = "") {
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    return module.emitError("cannot detect the host CPU: ") << llvm::toString(builder.takeError());
  if (!cpu.empty() && cpu != "native") { // a named CPU: its features, not the host's
    llvm::orc::JITTargetMachineBuilder named(builder->getTargetTriple());
    named.setCPU(cpu.str());
    *builder = std::move(named);
  }
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

namespace {

/// A builder of target machines like `tm` (one per thread that compiles,
/// and the JIT's own).
llvm::orc::JITTargetMachineBuilder builderLike(llvm::TargetMachine &tm) {
  llvm::orc::JITTargetMachineBuilder jtmb(tm.getTargetTriple());
  jtmb.setCPU(tm.getTargetCPU().str());
  jtmb.addFeatures(std::vector<std::string>{tm.getTargetFeatureString().str()});
  return jtmb;
}

constexpr unsigned kParts = cpu::kCodePartitions;

/// `_mlir_NAME(void **args)` beside each function NAME defined with external
/// linkage: calls NAME with argument i loaded from where args[i] points (and
/// stores a result through args[n]): the packed calling convention of
/// MLIR's ExecutionEngine, which JitModule::call uses.
void addPackedWrappers(llvm::Module &m) {
  std::vector<llvm::Function *> fns;
  for (llvm::Function &f : m)
    if (!f.isDeclaration() && f.hasExternalLinkage())
      fns.push_back(&f);
  llvm::IRBuilder<> b(m.getContext());
  llvm::Type *ptr = b.getPtrTy();
  for (llvm::Function *f : fns) {
    auto *w = llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), {ptr}, false),
                                     llvm::GlobalValue::ExternalLinkage, "_mlir_" + f->getName(), m);
    b.SetInsertPoint(llvm::BasicBlock::Create(m.getContext(), "entry", w));
    auto slot = [&](unsigned i) {
      return b.CreateLoad(ptr, b.CreateConstGEP1_64(ptr, w->getArg(0), i));
    };
    llvm::SmallVector<llvm::Value *> args;
    for (llvm::Argument &a : f->args())
      args.push_back(b.CreateLoad(a.getType(), slot(a.getArgNo())));
    // The function stays out of line: inlined, its code would be
    // generated twice. Its definition is not taken as the exact one
    // (weak_odr), so that the wrapper's call keeps every argument: an entry
    // point ignores many (the other function's buffers), and a call passing
    // hundreds of poison values made instruction selection quadratic.
    f->addFnAttr(llvm::Attribute::NoInline);
    f->setLinkage(llvm::GlobalValue::WeakODRLinkage);
    llvm::Value *r = b.CreateCall(f, args);
    if (!f->getReturnType()->isVoidTy())
      b.CreateStore(r, slot(f->arg_size()));
    b.CreateRetVoid();
  }
}

/// Moves each top-level loop nest of the functions defined with external
/// linkage (a step's or a model's sequence of kernels) into a function of
/// its own, so that their code can be generated in parallel partitions.
void outlineLoopNests(llvm::Module &m) {
  std::vector<llvm::Function *> fns;
  for (llvm::Function &f : m)
    if (!f.isDeclaration() && f.hasExternalLinkage() && !f.getName().starts_with("_mlir_"))
      fns.push_back(&f);
  for (llvm::Function *f : fns) {
    // Fields read from memref descriptors become the values inserted, so
    // that nests take the buffers' pointers (which can be `noalias`), not
    // whole descriptors.
    const llvm::DataLayout &layout = m.getDataLayout();
    for (llvm::Instruction &i : llvm::make_early_inc_range(llvm::instructions(*f)))
      if (llvm::isa<llvm::ExtractValueInst>(i))
        if (llvm::Value *v = llvm::simplifyInstruction(&i, llvm::SimplifyQuery(layout))) {
          i.replaceAllUsesWith(v);
          i.eraseFromParent();
        }
    std::vector<std::vector<llvm::BasicBlock *>> nests;
    {
      llvm::DominatorTree dt(*f);
      llvm::LoopInfo li(dt);
      for (llvm::Loop *l : li)
        nests.emplace_back(l->getBlocks().begin(), l->getBlocks().end());
    }
    for (auto &blocks : nests) {
      llvm::DominatorTree dt(*f);
      llvm::CodeExtractorAnalysisCache cache(*f);
      llvm::CodeExtractor extractor(blocks, &dt, /*AggregateArgs=*/false, nullptr, nullptr, nullptr,
                                    /*AllowVarArgs=*/false, /*AllowAlloca=*/true);
      if (!extractor.isEligible())
        continue;
      // Kept out of line, so that a nest's code is the same in whichever
      // partition it lands.
      llvm::Function *nest = extractor.extractCodeRegion(cache);
      if (!nest)
        continue;
      nest->addFnAttr(llvm::Attribute::NoInline);
      // A pointer parameter is `noalias` when it is the only one derived
      // from a `noalias` buffer argument (or a stack allocation) of the
      // caller: the facts the caller stated hold in the nest too, and its
      // loops vectorize without run-time overlap checks.
      auto *call = llvm::cast<llvm::CallInst>(*nest->user_begin());
      llvm::DenseMap<const llvm::Value *, unsigned> uses;
      auto rootOf = [](llvm::Value *v) -> const llvm::Value * {
        const llvm::Value *root = llvm::getUnderlyingObject(v, /*MaxLookup=*/0);
        auto *arg = llvm::dyn_cast<llvm::Argument>(root);
        return (arg && arg->hasNoAliasAttr()) || llvm::isa<llvm::AllocaInst>(root) ? root : nullptr;
      };
      for (llvm::Value *a : call->args())
        if (a->getType()->isPointerTy())
          ++uses[rootOf(a)];
      for (auto [i, a] : llvm::enumerate(call->args()))
        if (a->getType()->isPointerTy())
          if (const llvm::Value *root = rootOf(a); root && uses[root] == 1)
            nest->addParamAttr(i, llvm::Attribute::NoAlias);
    }
  }
}

/// Partition `part` of a lowered module (LLVM dialect) as LLVM IR for the
/// host in `context`: translated, with packed wrappers for the JIT, its
/// loop nests outlined. Translation reads the MLIR context the other
/// partitions' threads share, so it holds `translating`; the rest is LLVM's
/// alone. The JIT and object files both start here, so that they compute
/// the same numbers.
llvm::Expected<std::unique_ptr<llvm::Module>> hostPart(ModuleOp part, llvm::LLVMContext &context,
                                                       llvm::TargetMachine &tm, std::mutex &translating) {
  std::unique_ptr<llvm::Module> m;
  {
    std::lock_guard<std::mutex> hold(translating);
    m = translateForHost(part, context, tm);
  }
  if (!m)
    return llvm::createStringError("translation to LLVM IR failed");
  addPackedWrappers(*m);
  outlineLoopNests(*m);
  return m;
}

/// Partition `part` as LLVM IR optimized (-O3) for `tm`.
llvm::Expected<std::unique_ptr<llvm::Module>> optimizePart(ModuleOp part, llvm::LLVMContext &context,
                                                           llvm::TargetMachine &tm, bool pic,
                                                           std::mutex &translating) {
  auto m = hostPart(part, context, tm, translating);
  if (!m)
    return m.takeError();
  if (pic)
    (*m)->setPICLevel(llvm::PICLevel::BigPIC);
  if (llvm::Error err = makeOptimizingTransformer(3, 0, &tm)(m->get()))
    return err;
  return m;
}

/// One partition optimized and compiled to object code, on an LLVM context
/// and target machine of its own (so partitions compile in parallel).
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> compilePart(ModuleOp part, llvm::orc::JITTargetMachineBuilder jtmb,
                                                                 unsigned index, std::mutex &translating) {
  llvm::LLVMContext context;
  auto tm = jtmb.createTargetMachine();
  if (!tm)
    return tm.takeError();
  auto m = optimizePart(part, context, **tm, /*pic=*/false, translating);
  if (!m)
    return m.takeError();
  llvm::SmallVector<char, 0> object;
  llvm::raw_svector_ostream os(object);
  llvm::legacy::PassManager pm;
  if ((*tm)->addPassesToEmitFile(pm, os, nullptr, llvm::CodeGenFileType::ObjectFile))
    return llvm::createStringError("the target cannot emit object files");
  pm.run(**m);
  return llvm::MemoryBuffer::getMemBufferCopy(llvm::StringRef(object.data(), object.size()),
                                              "nnc-part-" + std::to_string(index));
}

/// A builder of the target machines that optimize and compile partitions
/// (one per thread), like `tm`, at the highest level.
llvm::orc::JITTargetMachineBuilder partBuilder(llvm::TargetMachine &tm, bool pic) {
  llvm::orc::JITTargetMachineBuilder jtmb = builderLike(tm);
  jtmb.setCodeGenOptLevel(llvm::CodeGenOptLevel::Aggressive);
  if (pic)
    jtmb.setRelocationModel(llvm::Reloc::PIC_);
  return jtmb;
}

/// run(0), ..., run(n - 1), taken in turn by one thread per core.
void inParallel(unsigned n, llvm::function_ref<void(unsigned)> run) {
  std::atomic<unsigned> next{0};
  auto worker = [&] {
    for (unsigned i = next++; i < n; i = next++)
      run(i);
  };
  std::vector<std::thread> threads;
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned t = 1; t < std::min(cores, n); ++t)
    threads.emplace_back(worker);
  worker();
  for (std::thread &t : threads)
    t.join();
}

/// The partitions of a lowered module (PartitionCode's nested modules).
SmallVector<ModuleOp> partsOf(ModuleOp module) { return llvm::to_vector(module.getOps<ModuleOp>()); }

/// What identifies the code generator: the executable's size and time of
/// change. Cache keys are taken on loops-level IR, before the passes of
/// this file run, so a changed compiler must not read another's objects.
std::string compilerIdentity() {
  static const std::string identity = [] {
    llvm::sys::fs::file_status status;
    if (llvm::sys::fs::status("/proc/self/exe", status))
      return std::string("unknown");
    return std::to_string(status.getSize()) + ":" +
           std::to_string(status.getLastModificationTime().time_since_epoch().count());
  }();
  return identity;
}

} // namespace

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
  auto tm = hostMachine(module);
  if (failed(tm))
    return failure();
  std::unique_ptr<llvm::TargetMachine> machine = std::move(*tm);
  // The entry points: the public functions (kernels become private ones).
  std::vector<std::string> names;
  for (auto fn : module.getOps<func::FuncOp>())
    if (!fn.isExternal() && fn.isPublic())
      names.push_back(fn.getName().str());

  // The object code cache: keyed by the loops-level module (printed
  // without locations), the compiler, the CPU, its features and the LLVM
  // version; one file per partition. Taken before lowering, so that a hit
  // skips the lowering too.
  std::string dir = rt::cacheDirectory();
  std::vector<std::string> paths;
  if (!dir.empty()) {
    std::string text;
    llvm::raw_string_ostream os(text);
    module.print(os);
    std::string identity = compilerIdentity();
    llvm::SHA256 hash;
    for (llvm::StringRef part : {llvm::StringRef("nnc-cpu-object-29"), llvm::StringRef(identity),
                                 llvm::StringRef(text), machine->getTargetCPU(), machine->getTargetFeatureString(),
                                 llvm::StringRef(LLVM_VERSION_STRING)}) {
      hash.update(part);
      hash.update(llvm::StringRef("\0", 1));
    }
    std::string stem = dir + "/cpu-" + llvm::toHex(hash.final(), /*LowerCase=*/true);
    for (unsigned i = 0; i < kParts; ++i)
      paths.push_back(stem + "." + std::to_string(i) + ".o");
    std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects;
    for (const std::string &path : paths)
      if (auto object = codegen::readCacheEntry(path)) // sealed: never runs changed bytes
        objects.push_back(llvm::MemoryBuffer::getMemBufferCopy(*object, path));
    if (objects.size() == kParts)
      if (auto cached = load(std::move(objects), *machine, names)) {
        cached->fromCache = true;
        return cached;
      }
    for (const std::string &path : paths) // absent or unloadable: compiled over below
      llvm::sys::fs::remove(path);
  }

  // Lowered in partitions (in parallel), each then translated, optimized
  // and compiled on a thread of its own.
  if (failed(lowerToLLVM(module)))
    return failure();
  SmallVector<ModuleOp> parts = partsOf(module);
  if (parts.size() != kParts)
    return module.emitError("expected ") << kParts << " code partitions, got " << parts.size();
  llvm::orc::JITTargetMachineBuilder jtmb = partBuilder(*machine, /*pic=*/false);
  std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects(parts.size());
  std::vector<std::string> errors(parts.size());
  std::mutex translating;
  auto run = [&](unsigned i) {
    auto object = compilePart(parts[i], jtmb, i, translating);
    if (object)
      objects[i] = std::move(*object);
    else
      errors[i] = llvm::toString(object.takeError());
  };
  inParallel(parts.size(), run);
  for (const std::string &error : errors)
    if (!error.empty())
      return module.emitError("JIT compilation failed: ") << error;

  // Kept for the next run (sealed, written aside and renamed into place).
  if (!paths.empty() && objects.size() == kParts)
    for (unsigned i = 0; i < kParts; ++i)
      codegen::writeCacheEntry(paths[i], objects[i]->getBuffer());
  auto jit = load(std::move(objects), *machine, names);
  if (!jit)
    return module.emitError("the JIT could not link the compiled code");
  return jit;
}

std::unique_ptr<cpu::JitModule> cpu::JitModule::load(std::vector<std::unique_ptr<llvm::MemoryBuffer>> objects,
                                                     llvm::TargetMachine &tm,
                                                     const std::vector<std::string> &names) {
  auto created = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(builderLike(tm)).create();
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
  // Profiled code calls the runtime's timers; data-parallel steps its
  // collectives.
  llvm::orc::MangleAndInterner interner(lljit->getExecutionSession(), lljit->getDataLayout());
  llvm::orc::SymbolMap map;
  map[interner("nnc_profile_begin")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_begin),
                                        llvm::JITSymbolFlags::Exported};
  map[interner("nnc_profile_end")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_profile_end),
                                      llvm::JITSymbolFlags::Exported};
  map[interner("nnc_all_reduce")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_all_reduce),
                                     llvm::JITSymbolFlags::Exported};
  map[interner("nnc_all_reduce_wait")] = {llvm::orc::ExecutorAddr::fromPtr(&nnc_all_reduce_wait),
                                          llvm::JITSymbolFlags::Exported};
  if (llvm::Error err = lib.define(llvm::orc::absoluteSymbols(std::move(map)))) {
    llvm::consumeError(std::move(err));
    return nullptr;
  }
  for (auto &object : objects)
    if (llvm::Error err = lljit->addObjectFile(std::move(object))) {
      llvm::consumeError(std::move(err));
      return nullptr;
    }
  std::unique_ptr<JitModule> jit(new JitModule());
  jit->jit = std::move(lljit);
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

FailureOr<HostCode> optimizeForHost(ModuleOp module, llvm::LLVMContext &context, bool pic, StringRef cpu = "") {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  DialectRegistry registry;
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerOpenMPDialectTranslation(registry);
  module.getContext()->appendDialectRegistry(registry);
  auto tm = hostMachine(module, pic, cpu);
  if (failed(tm))
    return failure();
  // The partitions optimized apart, as the JIT does (in parallel, each in
  // an LLVM context of its own), then linked into one module.
  HostCode code{std::move(*tm), nullptr};
  SmallVector<ModuleOp> parts = partsOf(module);
  std::vector<llvm::SmallVector<char, 0>> bitcode(parts.size());
  std::vector<std::string> errors(parts.size());
  std::mutex translating;
  llvm::orc::JITTargetMachineBuilder jtmb = partBuilder(*code.machine, pic);
  inParallel(parts.size(), [&](unsigned i) {
    llvm::LLVMContext own;
    auto partMachine = jtmb.createTargetMachine();
    if (!partMachine) {
      errors[i] = llvm::toString(partMachine.takeError());
      return;
    }
    auto m = optimizePart(parts[i], own, **partMachine, pic, translating);
    if (!m) {
      errors[i] = llvm::toString(m.takeError());
      return;
    }
    llvm::raw_svector_ostream os(bitcode[i]);
    llvm::WriteBitcodeToFile(**m, os);
  });
  for (unsigned i = 0; i < parts.size(); ++i) {
    if (!errors[i].empty())
      return module.emitError("LLVM optimization failed: ") << errors[i];
    auto m = llvm::parseBitcodeFile(llvm::MemoryBufferRef(llvm::StringRef(bitcode[i].data(), bitcode[i].size()),
                                                          "part"),
                                    context);
    if (!m)
      return module.emitError("LLVM optimization failed: ") << llvm::toString(m.takeError());
    if (!code.module)
      code.module = std::move(*m);
    else if (llvm::Linker::linkModules(*code.module, std::move(*m)))
      return module.emitError("the code partitions do not link");
  }
  if (!code.module)
    return module.emitError("no code partitions: the module is not lowered");
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

LogicalResult cpu::emitObjectFile(ModuleOp module, StringRef path, StringRef cpu) {
  llvm::LLVMContext context;
  auto code = optimizeForHost(module, context, /*pic=*/true, cpu);
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
  auto sym = jit->lookup(("_mlir_" + name).str()); // its packed wrapper
  if (!sym) {
    llvm::consumeError(sym.takeError());
    return failure();
  }
  functions[name] = sym->toPtr<void (*)(void **)>();
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
