//===- Sources.cpp - data sets in their own formats -----------------------===//

#include "runtime/Sources.h"
#include "runtime/Memory.h"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <limits>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <zip.h>
#include <zlib.h>

using namespace nnc::rt;

Status nnc::rt::readWholeFile(const std::string &path, std::vector<uint8_t> &bytes) {
  // gzread passes a file that is not gzip through unchanged.
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f)
    return Status::error(path + ": cannot open the file (" + std::strerror(errno) + ")");
  gzbuffer(f, 1 << 20);
  bytes.clear();
  std::vector<uint8_t> chunk(1 << 20);
  for (;;) {
    int n = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      std::string why = gzerror(f, &code);
      gzclose(f);
      return Status::error(path + ": " + (code == Z_ERRNO ? std::string(std::strerror(errno)) : why) +
                           " (a corrupt or truncated gzip file?)");
    }
    if (n == 0)
      break;
    bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
  }
  gzclose(f);
  return Status::ok();
}

bool nnc::rt::isDirectory(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool nnc::rt::exists(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

/// The entries of a directory (not "." and ".."), sorted by name.
static std::vector<std::string> listDirectory(const std::string &dir) {
  std::vector<std::string> names;
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        names.push_back(e->d_name);
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

//===----------------------------------------------------------------------===//
// CIFAR-10
//===----------------------------------------------------------------------===//

namespace {

/// Pixel rows of memory-mapped files: row r of file k at
/// `offset + (r - first[k]) * stride`, `width` bytes, scaled by 1/255. The
/// pages are the kernel's to keep or drop.
class MappedPixels : public RowSource {
public:
  ~MappedPixels() override {
    for (const Map &m : maps)
      munmap(const_cast<uint8_t *>(m.data), m.size);
  }
  Status add(const std::string &path, const uint8_t *data, size_t size, int64_t rows) {
    maps.push_back(Map{path, data, size, count});
    count += rows;
    return Status::ok();
  }
  Status copyRow(int64_t r, float *out) const override {
    const uint8_t *p = row(r);
    for (int64_t i = 0; i < width; ++i)
      out[i] = pixelValue(p[i]);
    return Status::ok();
  }
  void prefetchRow(int64_t r) const override {
    const uint8_t *p = row(r);
    for (int64_t at = 0; at < width; at += 64)
      __builtin_prefetch(p + at);
  }
  int64_t width = 0, offset = 0, stride = 0, count = 0;

private:
  struct Map {
    std::string path;
    const uint8_t *data;
    size_t size;
    int64_t first;
  };
  const uint8_t *row(int64_t r) const {
    size_t k = maps.size() - 1;
    while (k > 0 && maps[k].first > r)
      --k;
    return maps[k].data + offset + (r - maps[k].first) * stride;
  }
  std::vector<Map> maps;
};

/// Maps `path` read-only; a gzipped or unreadable file is not mapped.
Status mapFile(const std::string &path, const uint8_t *&data, size_t &size) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    return Status::error(path + ": cannot open the file (" + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    return Status::error(path + ": cannot read the file (" + std::strerror(errno) + ")");
  }
  size = static_cast<size_t>(st.st_size);
  void *p = size ? mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
  ::close(fd);
  if (size && p == MAP_FAILED)
    return Status::error(path + ": cannot map the file (" + std::strerror(errno) + ")");
  data = static_cast<const uint8_t *>(p);
  return Status::ok();
}

} // namespace

Status nnc::rt::loadCifar10(const std::string &dir, bool test, Table &out) {
  constexpr int64_t kPixels = 3072, kRecord = kPixels + 1;
  std::string base = dir;
  if (!exists(base + "/test_batch.bin") && isDirectory(dir + "/cifar-10-batches-bin"))
    base = dir + "/cifar-10-batches-bin";
  std::vector<std::string> files;
  if (test)
    files = {base + "/test_batch.bin"};
  else
    for (int i = 1; i <= 5; ++i)
      files.push_back(base + "/data_batch_" + std::to_string(i) + ".bin");
  out = Table();
  // The images stay in the files, mapped; the labels (a byte a record) are
  // read out, every record checked before anything trains.
  auto images = std::make_shared<MappedPixels>();
  images->width = kPixels;
  images->offset = 1;
  images->stride = kRecord;
  Field labels{"labels", 1, true, {}};
  for (const std::string &file : files) {
    if (!exists(file))
      return Status::error(file + ": no such file (CIFAR-10's binary release has data_batch_1.bin .. "
                                  "data_batch_5.bin and test_batch.bin)");
    const uint8_t *bytes = nullptr;
    size_t size = 0;
    if (Status s = mapFile(file, bytes, size); !s)
      return s;
    int64_t records = static_cast<int64_t>(size) / kRecord;
    if (Status s = images->add(file, bytes, size, records); !s)
      return s;
    if (size == 0 || static_cast<int64_t>(size) % kRecord != 0)
      return Status::error(file + ": record " + std::to_string(records + 1) + " is short (" +
                           std::to_string(size % kRecord) + " of " + std::to_string(kRecord) +
                           " bytes; the file has " + std::to_string(size) + " bytes)");
    for (int64_t r = 0; r < records; ++r) {
      uint8_t label = bytes[r * kRecord];
      if (label > 9)
        return Status::error(file + ": record " + std::to_string(r + 1) + " has label " + std::to_string(label) +
                             ", not a class 0-9");
      labels.values.push_back(label);
    }
    out.count += records;
  }
  Field pixels{"images", kPixels, false, {}};
  pixels.from = std::move(images);
  pixels.source = labels.source = files.size() == 1 ? files[0] : base + "/data_batch_*.bin";
  out.fields.push_back(std::move(pixels));
  out.fields.push_back(std::move(labels));
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// NumPy
//===----------------------------------------------------------------------===//

namespace {

/// The value of `key` in a .npy header (a Python dict literal).
std::string headerValue(const std::string &header, const std::string &key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos)
    return "";
  at = header.find(':', at);
  if (at == std::string::npos)
    return "";
  ++at;
  while (at < header.size() && header[at] == ' ')
    ++at;
  if (at < header.size() && header[at] == '(') {
    size_t e = header.find(')', at);
    return e == std::string::npos ? "" : header.substr(at, e - at + 1);
  }
  if (at < header.size() && header[at] == '\'') {
    size_t e = header.find('\'', at + 1);
    return e == std::string::npos ? "" : header.substr(at + 1, e - at - 1);
  }
  size_t e = header.find_first_of(",}", at);
  return header.substr(at, e == std::string::npos ? std::string::npos : e - at);
}

template <typename T> void widen(const uint8_t *p, size_t n, std::vector<float> &out) {
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    out[i] = static_cast<float>(v);
  }
}

/// Reads one .npy image (`where` names it in errors) into a field named
/// `name`; `count` gets its first dimension.
Status parseNpy(const std::vector<uint8_t> &b, const std::string &where, const std::string &name, Field &f,
                int64_t &count) {
  static const char magic[] = "\x93NUMPY";
  if (b.size() < 10 || std::memcmp(b.data(), magic, 6) != 0)
    return Status::error(where + ": not a .npy array (no \\x93NUMPY magic)");
  int major = b[6];
  size_t headerLen = 0, start = 0;
  if (major == 1) {
    headerLen = b[8] | (b[9] << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12)
      return Status::error(where + ": truncated .npy header");
    headerLen = b[8] | (b[9] << 8) | (size_t(b[10]) << 16) | (size_t(b[11]) << 24);
    start = 12;
  } else {
    return Status::error(where + ": .npy format version " + std::to_string(major) + " is not supported");
  }
  if (start + headerLen > b.size())
    return Status::error(where + ": truncated .npy header");
  std::string header(reinterpret_cast<const char *>(b.data() + start), headerLen);
  std::string descr = headerValue(header, "descr"), fortran = headerValue(header, "fortran_order"),
              shapeText = headerValue(header, "shape");
  if (descr.empty() || shapeText.empty())
    return Status::error(where + ": a .npy header without descr or shape");
  if (fortran.find("True") != std::string::npos)
    return Status::error(where + ": the array is in Fortran order; save np.ascontiguousarray(a) instead");
  // "(d0, d1, ...)": whole numbers, each checked, their product too, before
  // anything is allocated.
  std::vector<int64_t> shape;
  std::string inner = shapeText.substr(1, shapeText.size() - 2);
  for (size_t at = 0; at < inner.size();) {
    size_t comma = inner.find(',', at);
    std::string item = inner.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? inner.size() : comma + 1;
    size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
    if (b == std::string::npos)
      continue;
    item = item.substr(b, e - b + 1);
    char *end = nullptr;
    errno = 0;
    long long d = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || d < 0 || d > (int64_t(1) << 40))
      return Status::error(where + ": shape " + shapeText + " has a dimension that is not a size");
    shape.push_back(d);
  }
  if (shape.empty())
    return Status::error(where + ": a scalar array; data needs a first axis of samples");
  char kind = descr.size() >= 3 ? descr[1] : '?';
  size_t item = descr.size() >= 3 ? static_cast<size_t>(std::atoi(descr.c_str() + 2)) : 0;
  if (descr[0] == '>' && item > 1)
    return Status::error(where + ": big-endian data (" + descr + ") is not supported");
  bool known = (kind == 'f' && (item == 4 || item == 8)) || ((kind == 'i' || kind == 'u') && item >= 1 && item <= 8 &&
                                                              (item & (item - 1)) == 0) ||
               (kind == 'b' && item == 1);
  if (!known)
    return Status::error(where + ": dtype '" + descr + "' is not supported (floats, integers and booleans are)");
  count = shape[0];
  int64_t width = 1;
  size_t n = static_cast<size_t>(count), data = start + headerLen;
  for (size_t i = 1; i < shape.size(); ++i) {
    width *= shape[i];
    if (shape[i] && n > (size_t(1) << 46) / static_cast<size_t>(shape[i]))
      return Status::error(where + ": shape " + shapeText + " is larger than any file holds");
    n *= static_cast<size_t>(shape[i]);
  }
  if (n > (size_t(1) << 46) / item)
    return Status::error(where + ": shape " + shapeText + " is larger than any file holds");
  if (b.size() - data != n * item)
    return Status::error(where + ": " + std::to_string(b.size() - data) + " bytes of data, but the header's shape " +
                         shapeText + " of " + descr + " needs " + std::to_string(n * item) +
                         (b.size() - data < n * item ? " (truncated)" : ""));
  f = Field{name, width, kind != 'f', {}};
  f.source = where;
  resizeLarge(f.values, n);
  const uint8_t *p = b.data() + data;
  if (kind == 'f' && item == 4)
    widen<float>(p, n, f.values);
  else if (kind == 'f') {
    for (size_t i = 0; i < n; ++i) {
      double v;
      std::memcpy(&v, p + i * 8, 8);
      if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max())
        return Status::error(where + ": element " + std::to_string(i) + " is beyond f32's range");
      f.values[i] = static_cast<float>(v);
    }
  } else if (kind == 'u' || kind == 'b') {
    item == 1 ? widen<uint8_t>(p, n, f.values) : item == 2 ? widen<uint16_t>(p, n, f.values)
    : item == 4 ? widen<uint32_t>(p, n, f.values) : widen<uint64_t>(p, n, f.values);
  } else {
    item == 1 ? widen<int8_t>(p, n, f.values) : item == 2 ? widen<int16_t>(p, n, f.values)
    : item == 4 ? widen<int32_t>(p, n, f.values) : widen<int64_t>(p, n, f.values);
  }
  if (kind == 'f')
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(f.values[i]))
        return Status::error(where + ": sample " + std::to_string(i / std::max<int64_t>(1, width) + 1) +
                             " holds a value that is not finite");
  return Status::ok();
}

/// Adds `f` to `out`. Arrays may differ in their sample counts (a file can
/// hold a training and a test set); the sets are checked once split.
Status addField(Table &out, Field &&f, int64_t count, const std::string &) {
  if (out.fields.empty())
    out.count = count;
  out.fields.push_back(std::move(f));
  return Status::ok();
}

} // namespace

Status nnc::rt::loadNpz(const std::string &path, Table &out) {
  out = Table();
  int code = 0;
  zip_t *z = zip_open(path.c_str(), ZIP_RDONLY, &code);
  if (!z) {
    zip_error_t e;
    zip_error_init_with_code(&e, code);
    std::string why = zip_error_strerror(&e);
    zip_error_fini(&e);
    return Status::error(path + ": cannot read it as a .npz (zip) file: " + why);
  }
  Status result = Status::ok();
  zip_int64_t entries = zip_get_num_entries(z, 0);
  for (zip_int64_t i = 0; i < entries && result; ++i) {
    std::string entry = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
    std::string where = path + ": " + entry;
    zip_stat_t st;
    zip_file_t *f = nullptr;
    if (zip_stat_index(z, static_cast<zip_uint64_t>(i), 0, &st) != 0 ||
        !(f = zip_fopen_index(z, static_cast<zip_uint64_t>(i), 0))) {
      result = Status::error(where + ": " + zip_strerror(z));
      break;
    }
    std::vector<uint8_t> bytes;
    resizeLarge(bytes, static_cast<size_t>(st.size));
    zip_int64_t got = zip_fread(f, bytes.data(), st.size);
    std::string why = got < 0 ? zip_file_strerror(f) : "";
    zip_fclose(f);
    if (got != static_cast<zip_int64_t>(st.size)) {
      result = Status::error(where + ": cannot read the entry" + (why.empty() ? "" : " (" + why + ")"));
      break;
    }
    std::string name = entry.size() > 4 && entry.substr(entry.size() - 4) == ".npy"
                           ? entry.substr(0, entry.size() - 4) : entry;
    Field field;
    int64_t count = 0;
    result = parseNpy(bytes, where, name, field, count);
    if (result)
      result = addField(out, std::move(field), count, path);
  }
  zip_close(z);
  if (result && out.fields.empty())
    return Status::error(path + ": the .npz file holds no arrays");
  return result;
}

Status nnc::rt::loadNpyDir(const std::string &dir, Table &out) {
  out = Table();
  if (!isDirectory(dir))
    return Status::error(dir + ": not a directory (npy(DIR) reads DIR/NAME.npy, one file per input)");
  for (const std::string &file : listDirectory(dir)) {
    if (file.size() <= 4 || file.substr(file.size() - 4) != ".npy")
      continue;
    std::vector<uint8_t> bytes;
    if (Status s = readWholeFile(dir + "/" + file, bytes); !s)
      return s;
    Field f;
    int64_t count = 0;
    if (Status s = parseNpy(bytes, dir + "/" + file, file.substr(0, file.size() - 4), f, count); !s)
      return s;
    if (Status s = addField(out, std::move(f), count, dir); !s)
      return s;
  }
  if (out.fields.empty())
    return Status::error(dir + ": no .npy files");
  return Status::ok();
}

Status nnc::rt::saveNpz(const std::string &path, const std::vector<HostTensor> &tensors) {
  std::string tmp = path + ".tmp";
  std::remove(tmp.c_str());
  int code = 0;
  zip_t *z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  if (!z)
    return Status::error(path + ": cannot write it (" + std::strerror(errno) + ")");
  // The buffers must live until zip_close writes them.
  std::vector<std::string> images;
  images.reserve(tensors.size());
  for (const HostTensor &t : tensors) {
    std::string shape = "(";
    for (size_t i = 0; i < t.shape.size(); ++i)
      shape += std::to_string(t.shape[i]) + (t.shape.size() == 1 || i + 1 < t.shape.size() ? "," : "");
    shape += ")";
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
    while ((10 + header.size() + 1) % 64)
      header += ' ';
    header += '\n';
    std::string npy = std::string("\x93NUMPY\x01\x00", 8);
    npy += static_cast<char>(header.size() & 0xff);
    npy += static_cast<char>(header.size() >> 8);
    npy += header;
    npy.append(reinterpret_cast<const char *>(t.data.data()), t.data.size() * sizeof(float));
    images.push_back(std::move(npy));
    zip_source_t *src = zip_source_buffer(z, images.back().data(), images.back().size(), 0);
    if (!src || zip_file_add(z, (t.name + ".npy").c_str(), src, ZIP_FL_OVERWRITE) < 0) {
      if (src)
        zip_source_free(src);
      std::string why = zip_strerror(z);
      zip_discard(z);
      std::remove(tmp.c_str());
      return Status::error(path + ": cannot write it (" + why + ")");
    }
  }
  if (zip_close(z) != 0) {
    std::string why = zip_strerror(z);
    zip_discard(z);
    std::remove(tmp.c_str());
    return Status::error(path + ": writing it failed (" + why + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::error(path + ": writing it failed (" + std::strerror(errno) + ")");
  }
  return Status::ok();
}
