//===- Distributed.h - data-parallel training over MPI ----------*- C++ -*-===//
//
// A data-parallel run is several processes (ranks) started by a launcher
// (`mpirun`, `srun`), each with a replica of the model. Every step, each
// rank computes gradients on its shard of one global batch, and the
// training step's `nn.all_reduce` ops combine them (compiled code calls
// nnc_all_reduce), so every replica applies the same update.
//
// MPI is loaded at run time (dlopen of Open MPI's libmpi.so.40), never
// linked: nnc starts and trains alone on a machine without MPI, and a
// launcher without the library is a clear error, not a failure to start.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_DISTRIBUTED_H
#define NNC_RUNTIME_DISTRIBUTED_H

#include "runtime/Status.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

extern "C" {
/// Called by compiled training steps: starts making `out` (n floats) the
/// combination over the ranks of each rank's `in` (`sum` != 0: their sum;
/// else their mean weighted by each rank's share of the global batch, see
/// rt::Group::setShare). `in` may equal `out`; `in` may be reused on
/// return, `out` is complete after nnc_all_reduce_wait. The identity in one
/// process.
void nnc_all_reduce(int64_t in, int64_t out, int64_t n, int64_t sum);
/// Waits until every nnc_all_reduce started so far is complete.
void nnc_all_reduce_wait();
}

namespace nnc::rt {

/// How a process takes part in a run: alone, or as one rank of MPI (its
/// gradients combined on the CPU by MPI, or on its GPU by NCCL, which MPI
/// starts).
enum class DistributedMode { Auto, None, Mpi, Nccl };

/// Parses `auto`, `none`, `mpi` or `nccl` (`--distributed=`).
bool parseDistributedMode(const std::string &text, DistributedMode &mode);

/// The ranks of this run as the launcher's environment describes them
/// (Open MPI's mpirun, Slurm's srun, a PMI/PMIx launcher), or 1 and 0.
struct LaunchInfo {
  int size = 1;
  int rank = 0;
  int local = 1; // ranks on this machine
  int localRank = 0;    // this rank among them (its GPU in an NCCL run)
  std::string launcher; // "mpirun", "srun", ... ("" when alone)
};
LaunchInfo detectLaunch();

/// The process group of a data-parallel run (one per process).
class Group {
public:
  /// Joins the run: with `mode` Auto, MPI when a launcher started this
  /// process with more than one rank; Mpi insists on MPI. Safe to call once.
  static Status join(DistributedMode mode);
  /// The group, or nullptr in a single-process run.
  static Group *current();
  /// Leaves MPI (MPI_Finalize); called at exit.
  static void leave();

  int rank() const { return rank_; }
  int size() const { return size_; }

  /// This rank's weight in the mean of nnc_all_reduce for the next step:
  /// its rows over the global batch's rows (1 / size for equal shards), so
  /// that a ragged last batch averages as one batch of all rows would.
  void setShare(double share) { share_ = share; }
  double share() const { return share_; }

  /// Sums over the ranks, in place.
  Status sum(float *data, int64_t n);
  Status sum(double *data, int64_t n);
  /// Element-wise maxima over the ranks, in place.
  Status max(double *data, int64_t n);
  /// Whether every rank passed the same 64-bit value.
  Status same(uint64_t value, bool &equal);

  /// Combinations started by compiled code run on a thread of their own,
  /// so that a gradient is sent while the backward pass computes the next
  /// (in the order the step computes them: last layer first); what is
  /// queued when the thread takes work goes as one bucket (one MPI call).
  void start(float *data, int64_t n);
  /// Waits for every combination started; the first error of them.
  Status wait();
  /// Keeps an error for the next wait() (compiled code cannot return one).
  void keepError(const std::string &message) {
    if (kept_.empty())
      kept_ = message;
  }

  /// Where communication time went since the last call: seconds the
  /// thread spent in MPI, and seconds the training step waited for it
  /// (the rest ran behind the computation); MPI calls and bytes sent.
  struct Traffic {
    double busy = 0, waited = 0;
    int64_t calls = 0, bytes = 0;
  };
  Traffic takeTraffic();

  ~Group();

private:
  Group(int rank, int size, bool background);
  /// Runs an MPI call on the communication thread, after what the step
  /// started, within the time limit.
  Status call(const std::function<Status()> &f);
  struct Worker;
  int rank_, size_;
  double share_;
  std::unique_ptr<Worker> worker_;
  std::string kept_;   // errors for the next wait()
  bool stuck_ = false; // a wait ran out of time
};

/// A rank's part of a global batch of `n` rows: rows [from, to) of
/// near-equal contiguous parts, and its share (to - from) / n. A rank left
/// without rows (n below the ranks) gets one row, [from, from + 1), at
/// share 0, so that every rank runs the same steps.
struct Shard {
  int64_t from = 0, to = 0;
  double share = 1;
};
Shard shardOf(int64_t n, int rank, int ranks);

/// How long a rank waits for the others, in seconds (NNC_DISTRIBUTED_TIMEOUT,
/// default 300): longer than any step or checkpoint, shorter than a user's
/// patience with a run that no longer moves.
int64_t distributedTimeLimit();

/// Threads per rank when none are asked for: the CPUs this process may use
/// shared by the ranks on its machine (at least 1), so that ranks that
/// share a machine do not time-slice its cores.
int64_t defaultThreadsPerRank(const LaunchInfo &launch);

/// FNV-1a over `n` bytes, continuing from `h` (start with kHashStart): the
/// digests the ranks compare to agree on a run and on their state.
constexpr uint64_t kHashStart = 1469598103934665603ull;
uint64_t hashBytes(uint64_t h, const void *data, size_t n);

/// That every rank runs the same training: a hash of `settings` and
/// `model` (its text) compared across the ranks; an error on every rank
/// when they differ. Nothing to check in a single process.
Status checkSameRun(const std::vector<std::pair<std::string, std::string>> &settings, const std::string &model);

/// Rank 0, or a process that trains alone: the one that prints, logs and
/// writes checkpoints.
inline bool isLeader() { return !Group::current() || Group::current()->rank() == 0; }

} // namespace nnc::rt

#endif // NNC_RUNTIME_DISTRIBUTED_H
