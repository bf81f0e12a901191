//===- Nccl.h - NCCL collectives on device buffers, loaded at run time -*- C++ -*-===//
//
// A data-parallel run on GPUs (`--distributed=nccl`, one rank per GPU)
// combines the gradients where they are, on the devices, with NCCL's
// allreduce, as PyTorch's DDP does. libnccl.so.2 is opened with dlopen
// like the driver (never linked: nnc builds without its header and starts
// without it) into a table of the entry points nnc uses. The table is
// plain data, so the tests fill it with collectives that run on the host.
// The ranks find each other through the run's MPI group (rt::Group):
// rank 0 makes NCCL's unique id and the group hands it to the others.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_NCCL_H
#define NNC_RUNTIME_NCCL_H

#include "runtime/CudaDriver.h"
#include "runtime/Status.h"

#include <cstdint>
#include <memory>
#include <string>

namespace nnc::rt {

class Group;

/// NCCL's unique id (ncclUniqueId), passed by value to ncclCommInitRank.
struct NcclUniqueId {
  char internal[128];
};

/// NCCL's enumerators nnc passes (nccl.h's values).
enum : int { kNcclFloat32 = 7, kNcclSum = 0, kNcclScalarHostImmediate = 1, kNcclInProgress = 7 };

struct NcclLibrary {
  int (*getUniqueId)(NcclUniqueId *id) = nullptr;
  int (*commInitRank)(void **comm, int ranks, NcclUniqueId id, int rank) = nullptr;
  int (*commDestroy)(void *comm) = nullptr;
  int (*commAbort)(void *comm) = nullptr;
  int (*commGetAsyncError)(void *comm, int *error) = nullptr;
  int (*allReduce)(const void *send, void *recv, size_t count, int type, int op, void *comm, void *stream) = nullptr;
  /// A sum of each rank's values times its own scalar (NCCL 2.11 and later).
  int (*redOpCreatePreMulSum)(int *op, void *scalar, int type, int residence, void *comm) = nullptr;
  int (*redOpDestroy)(int op, void *comm) = nullptr;
  const char *(*getErrorString)(int rc) = nullptr;
  int version = 0; // ncclGetVersion's (22803 for 2.28.3)

  /// `what` failed with `rc`, in words.
  Status fail(const std::string &what, int rc) const;
};

/// Opens libnccl.so.2 (or NNC_NCCL_LIBRARY). Fails with one line saying why.
Status loadNccl(NcclLibrary &out);

/// One rank's communicator of a run: every rank's device buffers combined
/// by allreduce, enqueued on a stream of the rank's device.
class NcclComm {
public:
  /// Joins the ranks of `group` (each rank's device context current):
  /// rank 0 makes the unique id, the group hands it to every rank.
  static Status create(const NcclLibrary &lib, Group &group, std::unique_ptr<NcclComm> &out);
  /// Wraps a communicator made elsewhere (the tests' emulation).
  NcclComm(const NcclLibrary &lib, void *comm, int rank, int size) : lib_(lib), comm_(comm), rank_(rank), size_(size) {}
  ~NcclComm();
  NcclComm(const NcclComm &) = delete;
  NcclComm &operator=(const NcclComm &) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const NcclLibrary &library() const { return lib_; }

  /// Enqueues on `stream` making `out` (n floats) the sum over the ranks
  /// of each rank's `in` times its own `scale` (1: a plain sum). `in` may
  /// equal `out`.
  Status allReduce(CuDevicePtr in, CuDevicePtr out, int64_t n, double scale, void *stream);
  /// An error NCCL met while running what was enqueued (a peer gone, a
  /// network failure), or ok.
  Status asyncError() const;
  /// Gives up on what is enqueued: kernels waiting for a peer that will
  /// never answer end, and the communicator is gone.
  void abort();

private:
  NcclLibrary lib_;
  void *comm_;
  int rank_, size_;
};

/// In a data-parallel run (rt::Group::current()), this rank's communicator
/// over every rank's device (NCCL loaded, the device context current);
/// alone, none.
Status joinDevices(std::unique_ptr<NcclComm> &out);

} // namespace nnc::rt

#endif // NNC_RUNTIME_NCCL_H
