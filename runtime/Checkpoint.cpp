//===- Checkpoint.cpp - safetensors checkpoints ---------------------------===//
//
// The JSON header is written by hand and read by a small parser that accepts
// exactly what safetensors headers contain: objects, strings, integer arrays.
//
//===----------------------------------------------------------------------===//

#include "runtime/Checkpoint.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

namespace nnc::rt {

uint32_t crc32(const uint8_t *data, size_t size) {
  static uint32_t table[256] = {0};
  if (table[1] == 0)
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k)
        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i)
    c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string jsonString(const std::string &s) {
  std::string out = "\"";
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
      continue;
    }
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  return out + "\"";
}

namespace {

/// The checksum of a checkpoint: CRC-32 of the header (with this value's
/// digits as zeros) then CRC-32 of the data, 16 hex digits in all, so that
/// a changed dtype, shape or offset is caught as surely as a changed weight.
constexpr const char *kChecksumKey = "nnc.checksum";
constexpr size_t kChecksumDigits = 16;

/// Where the checksum's digits stand in `header`, or npos.
size_t checksumAt(const std::string &header) {
  std::string key = std::string("\"") + kChecksumKey + "\":\"";
  size_t at = header.find(key);
  if (at == std::string::npos || header.find(key, at + 1) != std::string::npos)
    return std::string::npos;
  at += key.size();
  return at + kChecksumDigits < header.size() && header[at + kChecksumDigits] == '"'
             ? at
             : std::string::npos;
}

std::string checksumOf(std::string header, size_t at, const uint8_t *data, size_t size) {
  header.replace(at, kChecksumDigits, kChecksumDigits, '0');
  char buf[kChecksumDigits + 1];
  std::snprintf(buf, sizeof buf, "%08x%08x",
                crc32(reinterpret_cast<const uint8_t *>(header.data()), header.size()),
                crc32(data, size));
  return buf;
}

void sealChecksum(std::string &header, const std::string &data) {
  size_t at = checksumAt(header);
  header.replace(at, kChecksumDigits,
                 checksumOf(header, at, reinterpret_cast<const uint8_t *>(data.data()), data.size()));
}

} // namespace

Status saveCheckpoint(const std::string &path, const std::vector<HostTensor> &tensors,
                      const Metadata &metadata) {
  std::string data;
  std::ostringstream header;
  header << "{";
  size_t offset = 0;
  for (const HostTensor &t : tensors) {
    size_t bytes = t.data.size() * 4;
    header << jsonString(t.name) << ":{\"dtype\":\"" << (t.integer ? "I32" : "F32") << "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i)
      header << (i ? "," : "") << t.shape[i];
    header << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]},";
    if (t.integer) {
      std::vector<int32_t> values(t.data.size());
      for (size_t i = 0; i < values.size(); ++i)
        values[i] = static_cast<int32_t>(std::lround(t.data[i]));
      data.append(reinterpret_cast<const char *>(values.data()), bytes);
    } else {
      data.append(reinterpret_cast<const char *>(t.data.data()), bytes);
    }
    offset += bytes;
  }
  Metadata meta = metadata;
  meta.erase("nnc.crc32");
  meta[kChecksumKey] = std::string(kChecksumDigits, '0'); // filled in below
  header << "\"__metadata__\":{";
  bool first = true;
  for (const auto &[k, v] : meta) {
    header << (first ? "" : ",") << jsonString(k) << ":" << jsonString(v);
    first = false;
  }
  header << "}}";
  std::string h = header.str();
  while (h.size() % 8)
    h += ' '; // safetensors pads the header with spaces
  sealChecksum(h, data);
  uint64_t n = h.size();
  unsigned char size[8];
  for (int i = 0; i < 8; ++i)
    size[i] = static_cast<unsigned char>(n >> (8 * i));

  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return Status::error(path + ": cannot write the checkpoint (" + std::strerror(errno) + ")");
  auto writeAll = [&](const void *p, size_t len) {
    const char *c = static_cast<const char *>(p);
    while (len > 0) {
      ssize_t w = ::write(fd, c, len);
      if (w <= 0)
        return false;
      c += w;
      len -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = writeAll(size, 8) && writeAll(h.data(), h.size()) && writeAll(data.data(), data.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ok = (::close(fd) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::error(path + ": writing the checkpoint failed (" + std::strerror(err) +
                         "); the previous file is unchanged");
  }
  return Status::ok();
}

namespace {

/// A parser for the JSON subset of safetensors headers.
class Json {
public:
  explicit Json(const std::string &s) : s(s) {}

  struct Value {
    enum Kind { String, Number, Array, Object } kind = String;
    std::string str;
    int64_t num = 0;
    std::vector<Value> items;     // array elements, or object values
    std::vector<std::string> keys; // object keys, one per item
    const Value *get(const std::string &key) const {
      for (size_t i = 0; i < keys.size(); ++i)
        if (keys[i] == key)
          return &items[i];
      return nullptr;
    }
  };

  bool parse(Value &out, std::string &error) {
    bool ok = value(out, 0);
    skip();
    if (ok && i != s.size()) {
      err = "trailing characters in the header";
      ok = false;
    }
    if (!ok)
      error = err + " at byte " + std::to_string(i) + " of the header";
    return ok;
  }

private:
  void skip() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
      ++i;
  }
  bool fail(const char *msg) {
    err = msg;
    return false;
  }
  bool string(std::string &out) {
    if (i >= s.size() || s[i] != '"')
      return fail("expected a string");
    for (++i; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\' && ++i >= s.size())
        break;
      out += s[i];
    }
    if (i >= s.size())
      return fail("unterminated string");
    ++i;
    return true;
  }
  bool value(Value &out, int depth) {
    if (depth > 8)
      return fail("header nested too deeply");
    skip();
    if (i >= s.size())
      return fail("unexpected end");
    if (s[i] == '"') {
      out.kind = Value::String;
      return string(out.str);
    }
    if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
      out.kind = Value::Number;
      size_t start = i;
      if (s[i] == '-')
        ++i;
      size_t digits = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9')
        ++i;
      if (i == digits)
        return fail("expected digits");
      if (i - start > 18)
        return fail("number too large");
      out.num = std::stoll(s.substr(start, i - start));
      return true;
    }
    if (s[i] == '[' || s[i] == '{') {
      bool object = s[i] == '{';
      char close = object ? '}' : ']';
      out.kind = object ? Value::Object : Value::Array;
      ++i;
      skip();
      if (i < s.size() && s[i] == close) {
        ++i;
        return true;
      }
      for (;;) {
        skip();
        Value v;
        std::string key;
        if (object) {
          if (!string(key))
            return false;
          skip();
          if (i >= s.size() || s[i] != ':')
            return fail("expected ':'");
          ++i;
        }
        if (!value(v, depth + 1))
          return false;
        if (object)
          out.keys.push_back(std::move(key));
        out.items.push_back(std::move(v));
        skip();
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < s.size() && s[i] == close) {
          ++i;
          return true;
        }
        return fail("expected ',' or a closing bracket");
      }
    }
    return fail("unexpected character");
  }

  const std::string &s;
  size_t i = 0;
  std::string err;
};

} // namespace

/// Bytes per element of the safetensors dtypes; 0 for an unknown one.
static uint64_t dtypeBytes(const std::string &dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64")
    return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32")
    return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16")
    return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

Status parseCheckpoint(const std::string &bytes, const std::string &path,
                       std::vector<HostTensor> &tensors, Metadata &metadata,
                       std::vector<std::string> *others) {
  tensors.clear();
  if (others)
    others->clear();
  metadata.clear();
  auto bad = [&](const std::string &what) {
    return Status::error(path + ": not a valid checkpoint: " + what);
  };
  if (bytes.size() < 8)
    return bad("the file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header size");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8)
    return bad("the header size " + std::to_string(n) + " exceeds the file (truncated?)");
  std::string header = bytes.substr(8, n);
  Json::Value root;
  std::string error;
  if (!Json(header).parse(root, error))
    return bad(error);
  if (root.kind != Json::Value::Object)
    return bad("the header is not an object");
  const size_t dataStart = 8 + n, dataSize = bytes.size() - dataStart;
  const uint8_t *data = reinterpret_cast<const uint8_t *>(bytes.data()) + dataStart;

  // The metadata first: its checksum covers everything else.
  for (size_t m = 0; m < root.keys.size(); ++m) {
    if (root.keys[m] != "__metadata__")
      continue;
    const Json::Value &v = root.items[m];
    if (v.kind != Json::Value::Object)
      return bad("__metadata__ is not an object");
    for (size_t k = 0; k < v.keys.size(); ++k) {
      if (v.items[k].kind != Json::Value::String)
        return bad("metadata '" + v.keys[k] + "' is not a string");
      metadata[v.keys[k]] = v.items[k].str;
    }
  }
  if (auto it = metadata.find(kChecksumKey); it != metadata.end()) {
    size_t at = checksumAt(header);
    if (at == std::string::npos || header.compare(at, kChecksumDigits, it->second) != 0)
      return bad("the checksum is not where nnc writes it (the header was edited)");
    std::string want = checksumOf(header, at, data, dataSize);
    if (want.compare(0, 8, it->second, 0, 8) != 0)
      return bad("the header checksum does not match (the file is corrupt)");
    if (want.compare(8, 8, it->second, 8, 8) != 0)
      return bad("the data checksum does not match (the file is corrupt)");
  } else if (auto old = metadata.find("nnc.crc32"); old != metadata.end()) {
    // Checkpoints of earlier versions: a CRC-32 of the data alone.
    uint32_t want = static_cast<uint32_t>(std::strtoull(old->second.c_str(), nullptr, 10));
    if (want != crc32(data, dataSize))
      return bad("the data checksum does not match (the file is corrupt)");
  } else if (metadata.count("nnc.model")) {
    // nnc writes a checksum into every checkpoint: its key was changed.
    return bad("the checksum is missing (the header was edited)");
  }

  // Every tensor's entry, then their byte ranges together: safetensors
  // requires them to tile the data region exactly, which rules out overlaps
  // (two tensors reading the same bytes) and unowned bytes.
  struct Range {
    uint64_t begin, end;
    size_t tensor; // kNotRead: a tensor of a dtype nnc does not read
    std::string name;
  };
  constexpr size_t kNotRead = SIZE_MAX;
  std::vector<Range> ranges;
  for (size_t m = 0; m < root.keys.size(); ++m) {
    const std::string &name = root.keys[m];
    const Json::Value &v = root.items[m];
    if (name == "__metadata__")
      continue;
    if (v.kind != Json::Value::Object)
      return bad("tensor '" + name + "' is not an object");
    const Json::Value *dtype = v.get("dtype"), *shape = v.get("shape"),
                      *offsets = v.get("data_offsets");
    if (!dtype || !shape || !offsets || dtype->kind != Json::Value::String ||
        shape->kind != Json::Value::Array || offsets->kind != Json::Value::Array ||
        offsets->items.size() != 2 || offsets->items[0].kind != Json::Value::Number ||
        offsets->items[1].kind != Json::Value::Number)
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    bool read = dtype->str == "F32" || dtype->str == "I32";
    uint64_t elementBytes = dtypeBytes(dtype->str);
    if (!read && (!others || elementBytes == 0))
      return bad("tensor '" + name + "' has dtype " + dtype->str + "; nnc reads F32 and I32");
    for (const Range &r : ranges)
      if (r.name == name)
        return bad("tensor '" + name + "' appears twice");
    HostTensor t;
    t.name = name;
    t.integer = dtype->str == "I32";
    uint64_t count = 1;
    for (const Json::Value &d : shape->items) {
      if (d.kind != Json::Value::Number || d.num < 0)
        return bad("tensor '" + name + "' has a bad shape");
      t.shape.push_back(d.num);
      // The byte count must fit the data region, which bounds the product.
      if (d.num != 0 && count > dataSize / static_cast<uint64_t>(d.num))
        count = UINT64_MAX;
      else
        count *= static_cast<uint64_t>(d.num);
    }
    int64_t begin = offsets->items[0].num, end = offsets->items[1].num;
    if (begin < 0 || end < begin || static_cast<uint64_t>(end) > dataSize)
      return bad("tensor '" + name + "' has byte range [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ") outside the " + std::to_string(dataSize) +
                 "-byte data region");
    if (count == UINT64_MAX || count > UINT64_MAX / elementBytes ||
        static_cast<uint64_t>(end - begin) != count * elementBytes)
      return bad("tensor '" + name + "' has byte range [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ") that does not fit its shape");
    ranges.push_back({static_cast<uint64_t>(begin), static_cast<uint64_t>(end), read ? tensors.size() : kNotRead,
                      name});
    if (!read) {
      others->push_back(name + " (" + dtype->str + ")");
      continue;
    }
    tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range &a, const Range &b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t covered = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range &r = ranges[i];
    if (r.begin < covered)
      return bad("tensors '" + ranges[i - 1].name + "' and '" + r.name +
                 "' overlap (bytes [" + std::to_string(r.begin) + ", " + std::to_string(covered) + "))");
    if (r.begin > covered)
      return bad("bytes [" + std::to_string(covered) + ", " + std::to_string(r.begin) +
                 ") of the data belong to no tensor");
    covered = r.end;
  }
  if (covered != dataSize)
    return bad("bytes [" + std::to_string(covered) + ", " + std::to_string(dataSize) +
               ") of the data belong to no tensor");

  for (const Range &r : ranges) {
    if (r.tensor == kNotRead)
      continue;
    HostTensor &t = tensors[r.tensor];
    t.data.resize(t.numel());
    std::memcpy(t.data.data(), data + r.begin, r.end - r.begin);
    if (t.integer)
      for (float &x : t.data) {
        int32_t i;
        std::memcpy(&i, &x, sizeof i);
        x = static_cast<float>(i);
      }
  }
  return Status::ok();
}

Status loadCheckpoint(const std::string &path, std::vector<HostTensor> &tensors,
                      Metadata &metadata, std::vector<std::string> *others) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error(path + ": cannot open the checkpoint");
  std::string bytes;
  try {
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::bad_alloc &) {
    return Status::error(path + ": the checkpoint does not fit in memory");
  }
  if (in.bad())
    return Status::error(path + ": read error");
  return parseCheckpoint(bytes, path, tensors, metadata, others);
}

} // namespace nnc::rt
