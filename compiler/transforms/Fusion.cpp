//===- Fusion.cpp - grouping core ops into kernels ------------------------===//
//
// The policy, in the order it is applied (docs/fusion.md explains why):
//   1. producers: an elementwise op whose uses are all in one elementwise
//      op of the same shape, or in one reduction, is computed inside that
//      consumer (so is a one-hot encoding with one such reader); a transpose read only as a product's left operand is read
//      through its permutation; an elementwise op read by a reduction and
//      by later ops is computed by the reduction, which also stores it;
//   2. epilogues: the elementwise ops that consume (only) a batch norm's,
//      a matrix product's, a convolution's, a reduction's or a max-pool
//      gradient's (windows tiling the input) result, with the same shape,
//      run as it stores each element, when everything else they read
//      exists before it;
//   3. horizontal: adjacent kernels of elementwise ops that do not depend
//      on each other run as one (an optimizer's updates of every weight).
// Views (reshapes) and literals (splat constants, element counts and math
// on them, read only element by element) are not kernels.
//
//===----------------------------------------------------------------------===//

#include "compiler/transforms/Fusion.h"
#include "compiler/transforms/Passes.h"

#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"

#include "llvm/ADT/SetVector.h"

namespace nnc {
#define GEN_PASS_DEF_FUSE
#define GEN_PASS_DEF_REMATERIALIZE
#include "compiler/transforms/Passes.h.inc"
} // namespace nnc

using namespace mlir;
using namespace nnc;
namespace nnops = nnc::nn;

namespace {

using nnops::isReduction;

/// Whether `user` reads the elements of `v` (a broadcast_like reads only
/// the shape of its second operand).
bool readsElementsOf(Operation *user, Value v) {
  if (isa<nnops::BroadcastLikeOp>(user))
    return user->getOperand(0) == v;
  return true;
}

/// Whether `op` only reads its operands element by element.
bool readsByElement(Operation *op) { return nnops::isElementwise(op) || isReduction(op); }

/// A value every element of which is known without reading memory: a
/// splat constant, an element count, or elementwise math on such values
/// (1 / count).
bool isLiteral(Operation *op) {
  if (auto c = dyn_cast<nnops::ConstantOp>(op))
    return cast<DenseElementsAttr>(c.getValue()).isSplat();
  if (isa<nnops::CountOp>(op))
    return true;
  return nnops::isElementwise(op) && llvm::all_of(op->getOperands(), [](Value v) {
           return v.getDefiningOp() && isLiteral(v.getDefiningOp());
         });
}

/// Ops that are no kernel: views of their input, and literals read only
/// element by element (their readers compute them in place).
bool isFree(Operation *op) {
  if (isa<nnops::ReshapeOp>(op))
    return true;
  return isLiteral(op) && !op->getResult(0).use_empty() &&
         llvm::all_of(op->getResult(0).getUsers(), readsByElement);
}

/// Disjoint groups of ops, each with the op at whose place it runs.
struct Groups {
  llvm::DenseMap<Operation *, unsigned> of;
  std::vector<SmallVector<Operation *>> members;
  std::vector<Operation *> anchor;

  void make(Operation *op) {
    of[op] = members.size();
    members.push_back({op});
    anchor.push_back(op);
  }
  /// Moves the members of `from` into `into`, which then runs at `at`.
  void merge(unsigned from, unsigned into, Operation *at) {
    if (from == into)
      return;
    for (Operation *op : members[from]) {
      of[op] = into;
      members[into].push_back(op);
    }
    members[from].clear();
    anchor[into] = at;
  }
  bool elementwiseOnly(unsigned g) const {
    return llvm::all_of(members[g], [](Operation *op) { return nnops::isElementwise(op); });
  }
};

/// Elementwise ops cheap enough to compute again where they are read.
bool isCheap(Operation *op) {
  return isa<nnops::NegOp, nnops::AbsOp, nnops::ReluOp, nnops::StepOp, nnops::IdentityOp,
             nnops::LeakyReluOp, nnops::AddOp, nnops::SubOp, nnops::MulOp>(op);
}

/// Whether `user` can compute `v` in place as it reads it (rule 1).
bool absorbs(Operation *user, Value v) {
  if (isReduction(user))
    return user->getOperand(0) == v;
  return nnops::isElementwise(user) && readsElementsOf(user, v) &&
         user->getResult(0).getType() == v.getType();
}

} // namespace

unsigned nnc::rematerialize(func::FuncOp fn) {
  Block &body = fn.front();
  llvm::DenseMap<Operation *, unsigned> order;
  for (auto [i, op] : llvm::enumerate(body))
    order[&op] = i;
  auto lastReader = [&](Value v) {
    unsigned last = 0;
    for (Operation *u : v.getUsers())
      last = std::max(last, order.lookup(u));
    return last;
  };
  unsigned copies = 0;
  for (Operation &op : llvm::make_early_inc_range(body.without_terminator())) {
    if (!isCheap(&op) || isFree(&op) || op.getNumResults() != 1)
      continue;
    Value r = op.getResult(0);
    SmallVector<OpOperand *> uses;
    for (OpOperand &u : r.getUses())
      uses.push_back(&u);
    if (uses.size() < 2 || llvm::any_of(uses, [&](OpOperand *u) { return !absorbs(u->getOwner(), r); }))
      continue;
    unsigned last = lastReader(r);
    bool alive = llvm::all_of(op.getOperands(), [&](Value v) {
      Operation *d = v.getDefiningOp();
      return !d || isFree(d) || lastReader(v) > last;
    });
    if (!alive)
      continue;
    for (OpOperand *u : llvm::drop_begin(uses)) {
      OpBuilder b(u->getOwner());
      Operation *copy = b.clone(op);
      order[copy] = order.lookup(u->getOwner());
      u->set(copy->getResult(0));
      ++copies;
    }
  }
  return copies;
}

static void markFusedProducers(nnops::KernelOp kernel);

void nnc::fuseKernels(func::FuncOp fn) {
  Block &body = fn.front();
  rematerialize(fn); // (nothing new when the caller ran it)
  Operation *ret = body.getTerminator();
  llvm::DenseMap<Operation *, unsigned> order;
  for (auto [i, op] : llvm::enumerate(body))
    order[&op] = i;
  Groups g;
  for (Operation &op : body.without_terminator())
    if (!isFree(&op))
      g.make(&op);
  auto groupOf = [&](Operation *op) -> std::optional<unsigned> {
    auto it = g.of.find(op);
    return it == g.of.end() ? std::nullopt : std::optional<unsigned>(it->second);
  };

  // 1. Producers into their consumers. Backends compute a fused producer
  // where its consumer reads it, recursively: the chains are kept at most
  // kMaxFusedChain long, so no model makes that recursion deep.
  llvm::DenseMap<Operation *, unsigned> chain; // fused producers below an op, the longest path
  for (Operation &op : body.without_terminator()) {
    if (!groupOf(&op) || op.getNumResults() != 1)
      continue;
    Value r = op.getResult(0);
    auto into = [&](Operation *consumer) {
      unsigned below = chain.lookup(&op) + 1;
      if (below > kMaxFusedChain)
        return;
      chain[consumer] = std::max(chain.lookup(consumer), below);
      g.merge(*groupOf(&op), *groupOf(consumer), g.anchor[*groupOf(consumer)]);
    };
    if (isa<nnops::TransposeOp>(op)) {
      if (r.hasOneUse() && isa<nnops::MatmulOp>(r.getUses().begin()->getOwner()) &&
          r.getUses().begin()->getOperandNumber() == 0)
        into(r.getUses().begin()->getOwner());
      continue;
    }
    // A one-hot encoding is computed where it is read (a comparison with
    // the index), by one reader.
    bool oneHot = isa<nnops::OneHotOp>(op);
    if (!nnops::isElementwise(&op) && !oneHot)
      continue;
    // A returned value is stored by the loop that computes it: once.
    if (llvm::count(ret->getOperands(), r) > 1)
      continue;
    llvm::SetVector<Operation *> users;
    for (Operation *u : r.getUsers())
      if (u != ret)
        users.insert(u);
    if (users.empty() || llvm::any_of(users, [&](Operation *u) { return !groupOf(u); }))
      continue;
    if (oneHot && (users.size() != 1 || llvm::is_contained(ret->getOperands(), r)))
      continue;
    if (users.size() == 1) {
      Operation *u = users.front();
      if (isReduction(u) || (nnops::isElementwise(u) && readsElementsOf(u, r) &&
                             u->getResult(0).getType() == r.getType()))
        into(u);
      continue;
    }
    // Several readers: the first, if a reduction of this value, computes
    // and stores it; the others run after it and read it from memory.
    Operation *first = *llvm::min_element(users, [&](Operation *a, Operation *b) {
      return order[a] < order[b];
    });
    if (isReduction(first) && first->getOperand(0) == r)
      into(first);
  }

  // 2. Epilogues of batch norms and reductions.
  for (Operation &op : body.without_terminator()) {
    if (!nnops::hostsEpilogue(&op) || op.getResult(0).use_empty() ||
        llvm::is_contained(ret->getOperands(), op.getResult(0)))
      continue;
    Value r = op.getResult(0);
    unsigned self = *groupOf(&op);
    if (g.anchor[self] != &op)
      continue;
    std::optional<unsigned> consumer = groupOf(*r.getUsers().begin());
    if (!consumer || *consumer == self ||
        llvm::any_of(r.getUsers(), [&](Operation *u) { return groupOf(u) != consumer; }) ||
        !g.elementwiseOnly(*consumer))
      continue;
    // Every op of the epilogue computes one element per element of `r`,
    // and everything it reads besides `r` exists before `op` runs.
    std::function<unsigned(Operation *)> readyAt = [&](Operation *d) -> unsigned {
      if (auto gi = groupOf(d))
        return order[g.anchor[*gi]];
      unsigned at = 0; // a view or a literal: where its operands are
      for (Value v : d->getOperands())
        if (Operation *p = v.getDefiningOp())
          at = std::max(at, readyAt(p));
      return at;
    };
    bool ok = true;
    for (Operation *m : g.members[*consumer]) {
      ok &= m->getResult(0).getType() == r.getType();
      for (Value v : m->getOperands()) {
        Operation *d = v.getDefiningOp();
        if (!d || d == &op || groupOf(d) == consumer)
          continue;
        if (readyAt(d) >= order[&op])
          ok = false;
      }
    }
    if (ok)
      g.merge(*consumer, self, &op);
  }

  // 3. Horizontal: adjacent elementwise kernels that do not read each other.
  SmallVector<unsigned> live;
  for (unsigned i = 0; i < g.members.size(); ++i)
    if (!g.members[i].empty())
      live.push_back(i);
  llvm::sort(live, [&](unsigned a, unsigned b) { return order[g.anchor[a]] < order[g.anchor[b]]; });
  for (size_t i = 0; i + 1 < live.size(); ++i) {
    unsigned cur = live[i], next = live[i + 1];
    if (!g.elementwiseOnly(cur) || !g.elementwiseOnly(next))
      continue;
    unsigned until = order[g.anchor[next]];
    bool ok = true;
    for (Operation *m : g.members[cur])
      for (Operation *u : m->getResult(0).getUsers()) {
        std::optional<unsigned> ug = groupOf(u);
        if (ug == cur)
          continue;
        // Readers in `next` would need the value first; readers before
        // `next` would need it before the merged kernel runs.
        unsigned at = ug ? order[g.anchor[*ug]] : order[u];
        if (ug == next || at <= until)
          ok = false;
      }
    if (ok)
      g.merge(cur, next, g.anchor[next]);
  }

  // The kernels, at their anchors, members in program order; a member's
  // results read outside the kernel are its results.
  for (auto [i, members] : llvm::enumerate(g.members)) {
    if (members.empty())
      continue;
    llvm::sort(members, [&](Operation *a, Operation *b) { return order[a] < order[b]; });
    llvm::DenseSet<Operation *> in(members.begin(), members.end());
    SmallVector<Value> outs;
    for (Operation *m : members)
      for (Value r : m->getResults())
        if (llvm::any_of(r.getUsers(), [&](Operation *u) { return !in.contains(u); }))
          outs.push_back(r);
    OpBuilder b(g.anchor[i]);
    auto kernel = b.create<nnops::KernelOp>(g.anchor[i]->getLoc(), ValueRange(outs).getTypes());
    Block *block = new Block;
    kernel.getBody().push_back(block);
    for (Operation *m : members)
      m->moveBefore(block, block->end());
    OpBuilder::atBlockEnd(block).create<nnops::YieldOp>(g.anchor[i]->getLoc(), outs);
    for (auto [v, k] : llvm::zip(outs, kernel.getResults()))
      v.replaceUsesWithIf(k, [&](OpOperand &use) { return !kernel->isAncestor(use.getOwner()); });
  }
  // An epilogue's kernel runs before views and literals it reads may be
  // defined: they move up to their first reader (last ones first, so that
  // a view of a view follows).
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body.without_terminator()))) {
    if (isa<nnops::KernelOp>(op))
      continue;
    Operation *first = nullptr;
    for (Operation *u : op.getUsers()) {
      Operation *top = body.findAncestorOpInBlock(*u);
      if (!first || top->isBeforeInBlock(first))
        first = top;
    }
    if (first && first->isBeforeInBlock(&op))
      op.moveBefore(first);
  }
  for (auto kernel : body.getOps<nnops::KernelOp>())
    markFusedProducers(kernel);
}

/// The roles of a kernel's members, written once for both backends: a
/// member whose value one other member alone reads, element by element, is
/// computed where it is read (kFusedAttr): an elementwise op read by an
/// elementwise op of its result's type or as a reduction's operand, a
/// one-hot read nowhere else, a transpose read as a product's left operand.
/// Read outside the kernel too, it is stored as it is computed
/// (kStoredAttr: an optimizer's new moments).
static void markFusedProducers(nnops::KernelOp kernel) {
  Block &block = kernel.getBody().front();
  Operation *yield = block.getTerminator();
  for (Operation &m : block.without_terminator()) {
    if (m.getNumResults() != 1)
      continue;
    Value r = m.getResult(0);
    llvm::SmallPtrSet<Operation *, 2> inside;
    bool outside = false;
    for (Operation *u : r.getUsers())
      u == yield ? (void)(outside = true) : (void)inside.insert(u);
    if (inside.size() != 1)
      continue;
    Operation *u = *inside.begin();
    bool producer = false;
    if (isa<nnops::TransposeOp>(m))
      producer = isa<nnops::MatmulOp>(u) && u->getOperand(0) == r && u->getOperand(1) != r;
    else if (nnops::isElementwise(&m) || (isa<nnops::OneHotOp>(m) && !outside))
      producer = isReduction(u) ? u->getOperand(0) == r
                                : nnops::isElementwise(u) && readsElementsOf(u, r) &&
                                      u->getResult(0).getType() == r.getType();
    if (!producer)
      continue;
    m.setAttr(kFusedAttr, UnitAttr::get(m.getContext()));
    if (outside)
      m.setAttr(kStoredAttr, UnitAttr::get(m.getContext()));
  }
}

std::vector<SmallVector<Operation *>> nnc::inlineKernels(func::FuncOp fn) {
  std::vector<SmallVector<Operation *>> groups;
  for (auto kernel : llvm::make_early_inc_range(fn.front().getOps<nnops::KernelOp>())) {
    Block &block = kernel.getBody().front();
    auto yield = cast<nnops::YieldOp>(block.getTerminator());
    SmallVector<Operation *> members;
    for (Operation &op : llvm::make_early_inc_range(block.without_terminator())) {
      members.push_back(&op);
      op.moveBefore(kernel);
    }
    kernel->replaceAllUsesWith(yield.getValues());
    kernel->erase();
    groups.push_back(std::move(members));
  }
  return groups;
}

namespace {
struct FusePass : nnc::impl::FuseBase<FusePass> {
  void runOnOperation() override { fuseKernels(getOperation()); }
};
struct RematerializePass : nnc::impl::RematerializeBase<RematerializePass> {
  void runOnOperation() override { rematerialize(getOperation()); }
};
} // namespace
