//===- Schedule.cpp - learning-rate schedules -----------------------------===//

#include "runtime/Schedule.h"

#include <algorithm>
#include <cmath>

using namespace nnc::rt;

const std::vector<CallSpec> &nnc::rt::scheduleSpecs() {
  using P = ParamSpec;
  static const std::vector<CallSpec> table = {
      {"step", {{"step_size", P::Number, true}, {"gamma", P::Number, false, 0.1}}, "step(step_size, gamma=0.1)"},
      {"multistep", {{"milestones", P::List, true}, {"gamma", P::Number, false, 0.1}},
       "multistep(milestones=[...], gamma=0.1)"},
      {"exponential", {{"gamma", P::Number, true}}, "exponential(gamma)"},
      {"cosine", {{"t_max", P::Number, true}, {"eta_min", P::Number, false, 0}}, "cosine(t_max, eta_min=0)"},
      {"linear",
       {{"start_factor", P::Number, false, 1.0 / 3}, {"end_factor", P::Number, false, 1.0},
        {"total_iters", P::Number, false, 5}},
       "linear(start_factor=1/3, end_factor=1, total_iters=5)"},
      {"onecycle",
       {{"max_lr", P::Number, true}, {"total_steps", P::Number, false, 0}, {"pct_start", P::Number, false, 0.3},
        {"anneal_strategy", P::String}, {"div_factor", P::Number, false, 25},
        {"final_div_factor", P::Number, false, 1e4}, {"three_phase", P::Number, false, 0}},
       "onecycle(max_lr, total_steps=epochs*steps, pct_start=0.3, anneal_strategy=\"cos\", div_factor=25, "
       "final_div_factor=1e4, three_phase=false)"},
  };
  return table;
}

static bool whole(double v) { return v == std::floor(v) && std::isfinite(v); }

Status nnc::rt::checkSchedule(Call &s) {
  if (Status st = resolveCall(scheduleSpecs(), "schedule", s); !st)
    return st;
  auto bad = [&](const std::string &why) { return Status::error("schedule " + s.name + ": " + why); };
  auto positiveWhole = [&](const char *key) {
    double v = s.number(key);
    return whole(v) && v >= 1;
  };
  if (s.name == "step") {
    if (!positiveWhole("step_size"))
      return bad("step_size must be a positive whole number of epochs");
  } else if (s.name == "multistep") {
    std::vector<double> m = s.numbers("milestones");
    if (m.empty())
      return bad("milestones must list at least one epoch");
    for (size_t i = 0; i < m.size(); ++i)
      if (!whole(m[i]) || m[i] < 1 || (i && m[i] <= m[i - 1]))
        return bad("milestones must be increasing positive whole numbers of epochs");
  } else if (s.name == "cosine") {
    if (!positiveWhole("t_max"))
      return bad("t_max must be a positive whole number of epochs");
    if (!(s.number("eta_min") >= 0))
      return bad("eta_min must be non-negative");
  } else if (s.name == "linear") {
    double a = s.number("start_factor"), b = s.number("end_factor");
    // torch.optim.lr_scheduler.LinearLR's own bounds.
    if (!(a > 0 && a <= 1))
      return bad("start_factor must be in (0, 1]");
    if (!(b >= 0 && b <= 1))
      return bad("end_factor must be in [0, 1]");
    if (!whole(s.number("total_iters")) || s.number("total_iters") < 1)
      return bad("total_iters must be a positive whole number of epochs");
  } else if (s.name == "onecycle") {
    if (!(s.number("max_lr") > 0))
      return bad("max_lr must be positive");
    double total = s.number("total_steps");
    if (!whole(total) || total < 0)
      return bad("total_steps must be a positive whole number (0: epochs times steps per epoch)");
    double pct = s.number("pct_start");
    if (!(pct > 0 && pct < 1))
      return bad("pct_start must be in (0, 1)");
    std::string a = s.string("anneal_strategy");
    if (!a.empty() && a != "cos" && a != "linear")
      return bad("anneal_strategy must be \"cos\" or \"linear\"");
    if (!(s.number("div_factor") > 0) || !(s.number("final_div_factor") > 0))
      return bad("div_factor and final_div_factor must be positive");
  }
  if (s.find("gamma") && !(s.number("gamma") > 0))
    return bad("gamma must be positive");
  return Status::ok();
}

bool nnc::rt::perStep(const Call &s) { return s.name == "onecycle"; }

/// OneCycleLR's rate at step `t` (from 0) of `total`.
static double oneCycle(const Call &s, double t, double total) {
  double maxLr = s.number("max_lr");
  double initial = maxLr / s.number("div_factor", 25);
  double minLr = initial / s.number("final_div_factor", 1e4);
  double pct = s.number("pct_start", 0.3);
  bool cosine = s.string("anneal_strategy") != "linear";
  struct Phase {
    double end, from, to;
  };
  std::vector<Phase> phases;
  if (s.number("three_phase") != 0)
    phases = {{pct * total - 1, initial, maxLr}, {2 * pct * total - 2, maxLr, initial}, {total - 1, initial, minLr}};
  else
    phases = {{pct * total - 1, initial, maxLr}, {total - 1, maxLr, minLr}};
  double start = 0;
  for (size_t i = 0; i < phases.size(); ++i) {
    const Phase &p = phases[i];
    if (t <= p.end || i + 1 == phases.size()) {
      double f = (t - start) / (p.end - start);
      return cosine ? p.to + (p.from - p.to) / 2.0 * (std::cos(M_PI * f) + 1) : (p.to - p.from) * f + p.from;
    }
    start = p.end;
  }
  return minLr;
}

double nnc::rt::scheduledRate(const Call &s, double base, const SchedulePoint &at) {
  // Epoch schedules see the number of epochs finished, as PyTorch's
  // scheduler does after that many `step()` calls.
  double e = static_cast<double>(at.epoch - 1);
  if (s.name == "step")
    return base * std::pow(s.number("gamma", 0.1), std::floor(e / s.number("step_size")));
  if (s.name == "multistep") {
    std::vector<double> m = s.numbers("milestones");
    auto passed = std::upper_bound(m.begin(), m.end(), e) - m.begin();
    return base * std::pow(s.number("gamma", 0.1), static_cast<double>(passed));
  }
  if (s.name == "exponential")
    return base * std::pow(s.number("gamma"), e);
  if (s.name == "cosine") {
    double lo = s.number("eta_min"), t = s.number("t_max");
    return lo + (base - lo) * (1 + std::cos(M_PI * e / t)) / 2;
  }
  if (s.name == "linear") {
    double a = s.number("start_factor", 1.0 / 3), b = s.number("end_factor", 1.0);
    double n = s.number("total_iters", 5);
    return base * (a + (b - a) * std::min(e, n) / n);
  }
  if (s.name == "onecycle") {
    double total = s.number("total_steps");
    if (total <= 0)
      total = static_cast<double>(at.epochs * at.stepsPerEpoch);
    return oneCycle(s, std::min(static_cast<double>(at.step), total - 1), total);
  }
  return base;
}
