//===- Cache.cpp - where compiled code is kept between runs ---------------===//

#include "runtime/Cache.h"

#include <cstdlib>

std::string nnc::rt::cacheDirectory() {
  if (const char *d = std::getenv("NNC_CACHE_DIR"); d && *d)
    return std::string(d) == "off" ? "" : d;
  if (const char *x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/nnc";
  if (const char *home = std::getenv("HOME"); home && *home)
    return std::string(home) + "/.cache/nnc";
  return "";
}
