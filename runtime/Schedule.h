//===- Schedule.h - learning-rate schedules ---------------------*- C++ -*-===//
//
// The learning rate as torch.optim.lr_scheduler computes it: StepLR,
// MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR (warm-up) and
// OneCycleLR. All but `onecycle` change the rate once an epoch (PyTorch's
// usual `scheduler.step()` after each epoch); `onecycle` changes it every
// step. The compiled step takes the rate as an argument, so a schedule
// never recompiles anything.
//
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_SCHEDULE_H
#define NNC_RUNTIME_SCHEDULE_H

#include "runtime/Call.h"

#include <cstdint>

namespace nnc::rt {

/// The schedules and their arguments (PyTorch's names and defaults).
const std::vector<CallSpec> &scheduleSpecs();

/// Resolves and checks a schedule: every rate, factor and count in range.
Status checkSchedule(Call &schedule);

/// Whether the schedule changes the rate every step (else every epoch).
bool perStep(const Call &schedule);

/// Where training is: `epoch` from 1, `step` the steps taken before this
/// one in the whole run, `stepsPerEpoch` and `epochs` of the run.
struct SchedulePoint {
  int64_t epoch = 1, step = 0, stepsPerEpoch = 1, epochs = 1;
};

/// The learning rate of the step at `at`, from the optimizer's `base` rate.
double scheduledRate(const Call &schedule, double base, const SchedulePoint &at);

} // namespace nnc::rt

#endif // NNC_RUNTIME_SCHEDULE_H
