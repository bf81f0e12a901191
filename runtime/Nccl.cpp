//===- Nccl.cpp - NCCL collectives on device buffers, loaded at run time --===//

#include "runtime/Nccl.h"

#include "runtime/Distributed.h"
#include "runtime/Library.h"

#include <cstdlib>
#include <dlfcn.h>
#include <vector>

using namespace nnc::rt;

Status NcclLibrary::fail(const std::string &what, int rc) const {
  const char *text = getErrorString ? getErrorString(rc) : nullptr;
  return Status::error(what + ": " + (text ? text : "NCCL error") + " (ncclResult_t " + std::to_string(rc) + ")");
}

Status nnc::rt::loadNccl(NcclLibrary &n) {
  // NNC_NCCL_LIBRARY names another build (a cluster's own, or one beside a
  // pip-installed PyTorch).
  const char *given = std::getenv("NNC_NCCL_LIBRARY");
  std::vector<std::string> names = {"libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"};
  if (given && *given)
    names = {given};
  void *lib = nullptr;
  std::string why;
  for (const std::string &name : names) {
    lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib)
      break;
    if (why.empty()) {
      const char *e = dlerror();
      why = e ? e : "not found";
    }
  }
  if (!lib)
    return Status::error("NCCL could not be loaded (" + why +
                         "); it comes with the CUDA toolkit or the nccl packages, or name it with NNC_NCCL_LIBRARY");
  Symbols sym(lib);
  int (*getVersion)(int *) = nullptr;
  sym(getVersion, "ncclGetVersion");
  sym(n.getUniqueId, "ncclGetUniqueId");
  sym(n.commInitRank, "ncclCommInitRank");
  sym(n.commDestroy, "ncclCommDestroy");
  sym(n.commAbort, "ncclCommAbort");
  sym(n.commGetAsyncError, "ncclCommGetAsyncError");
  sym(n.allReduce, "ncclAllReduce");
  sym(n.redOpCreatePreMulSum, "ncclRedOpCreatePreMulSum");
  sym(n.redOpDestroy, "ncclRedOpDestroy");
  sym(n.getErrorString, "ncclGetErrorString");
  if (!sym.missing().empty())
    return Status::error("NCCL (" + names.front() + ") has no entry point " + sym.missing() +
                         "; nnc needs NCCL 2.11 or later");
  getVersion(&n.version);
  return Status::ok();
}

Status NcclComm::create(const NcclLibrary &lib, Group &group, std::unique_ptr<NcclComm> &out) {
  NcclUniqueId id{};
  if (group.rank() == 0)
    if (int rc = lib.getUniqueId(&id))
      return lib.fail("ncclGetUniqueId", rc);
  // The group has sums, not a broadcast: every other rank adds zeros, and
  // doubles hold bytes exactly.
  double bytes[sizeof id.internal];
  for (size_t i = 0; i < sizeof id.internal; ++i)
    bytes[i] = static_cast<unsigned char>(id.internal[i]);
  if (Status s = group.sum(bytes, static_cast<int64_t>(sizeof id.internal)); !s)
    return s;
  for (size_t i = 0; i < sizeof id.internal; ++i)
    id.internal[i] = static_cast<char>(static_cast<unsigned char>(bytes[i]));
  void *comm = nullptr;
  if (int rc = lib.commInitRank(&comm, group.size(), id, group.rank()))
    return lib.fail(
        "ncclCommInitRank (rank " + std::to_string(group.rank()) + " of " + std::to_string(group.size()) + ")", rc);
  out = std::make_unique<NcclComm>(lib, comm, group.rank(), group.size());
  return Status::ok();
}

NcclComm::~NcclComm() {
  if (comm_ && lib_.commDestroy)
    lib_.commDestroy(comm_);
}

Status NcclComm::allReduce(CuDevicePtr in, CuDevicePtr out, int64_t n, double scale, void *stream) {
  const void *send = reinterpret_cast<const void *>(in);
  void *recv = reinterpret_cast<void *>(out);
  auto count = static_cast<size_t>(n);
  if (scale == 1.0) {
    if (int rc = lib_.allReduce(send, recv, count, kNcclFloat32, kNcclSum, comm_, stream))
      return lib_.fail("ncclAllReduce(" + std::to_string(n) + " floats)", rc);
    return Status::ok();
  }
  // The scalar is read when the operator is made (host-immediate), and an
  // operator may go as soon as the last call given it has returned.
  float factor = static_cast<float>(scale);
  int op = 0;
  if (int rc = lib_.redOpCreatePreMulSum(&op, &factor, kNcclFloat32, kNcclScalarHostImmediate, comm_))
    return lib_.fail("ncclRedOpCreatePreMulSum", rc);
  int rc = lib_.allReduce(send, recv, count, kNcclFloat32, op, comm_, stream);
  lib_.redOpDestroy(op, comm_);
  if (rc)
    return lib_.fail("ncclAllReduce(" + std::to_string(n) + " floats)", rc);
  return Status::ok();
}

Status NcclComm::asyncError() const {
  int error = 0;
  if (int rc = lib_.commGetAsyncError(comm_, &error))
    return lib_.fail("ncclCommGetAsyncError", rc);
  if (error != 0 && error != kNcclInProgress)
    return lib_.fail("NCCL", error);
  return Status::ok();
}

void NcclComm::abort() {
  if (comm_ && lib_.commAbort)
    lib_.commAbort(comm_);
  comm_ = nullptr;
}

Status nnc::rt::joinDevices(std::unique_ptr<NcclComm> &out) {
  Group *group = Group::current();
  if (!group)
    return Status::ok();
  NcclLibrary lib;
  if (Status s = loadNccl(lib); !s)
    return s;
  return NcclComm::create(lib, *group, out);
}
