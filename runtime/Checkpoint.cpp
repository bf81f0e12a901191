//===- Checkpoint.cpp - safetensors checkpoints ---------------------------===//
//
// The JSON header is written by hand and read by a small parser that accepts
// exactly what safetensors headers contain: objects, strings, integer arrays.
//
//===----------------------------------------------------------------------===//

#include "runtime/Checkpoint.h"

#include <cmath>
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
  meta["nnc.crc32"] = std::to_string(crc32(reinterpret_cast<const uint8_t *>(data.data()), data.size()));
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

Status loadCheckpoint(const std::string &path, std::vector<HostTensor> &tensors,
                      Metadata &metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error(path + ": cannot open the checkpoint");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
  size_t dataStart = 8 + n, dataSize = bytes.size() - dataStart;
  tensors.clear();
  metadata.clear();
  for (size_t m = 0; m < root.keys.size(); ++m) {
    const std::string &name = root.keys[m];
    const Json::Value &v = root.items[m];
    if (name == "__metadata__") {
      for (size_t k = 0; k < v.keys.size(); ++k)
        metadata[v.keys[k]] = v.items[k].str;
      continue;
    }
    const Json::Value *dtype = v.get("dtype"), *shape = v.get("shape"),
                      *offsets = v.get("data_offsets");
    if (!dtype || !shape || !offsets || shape->kind != Json::Value::Array ||
        offsets->kind != Json::Value::Array || offsets->items.size() != 2)
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    if (dtype->str != "F32" && dtype->str != "I32")
      return bad("tensor '" + name + "' has dtype " + dtype->str + "; nnc reads F32 and I32");
    HostTensor t;
    t.name = name;
    t.integer = dtype->str == "I32";
    for (const Json::Value &d : shape->items) {
      if (d.kind != Json::Value::Number || d.num < 0)
        return bad("tensor '" + name + "' has a bad shape");
      t.shape.push_back(d.num);
    }
    int64_t begin = offsets->items[0].num, end = offsets->items[1].num;
    if (begin < 0 || end < begin || static_cast<uint64_t>(end) > dataSize ||
        end - begin != t.numel() * static_cast<int64_t>(sizeof(float)))
      return bad("tensor '" + name + "' has byte range [" + std::to_string(begin) + ", " +
                 std::to_string(end) + ") that does not fit its shape or the file");
    t.data.resize(t.numel());
    std::memcpy(t.data.data(), bytes.data() + dataStart + begin, end - begin);
    if (t.integer)
      for (float &x : t.data) {
        int32_t i;
        std::memcpy(&i, &x, sizeof i);
        x = static_cast<float>(i);
      }
    tensors.push_back(std::move(t));
  }
  auto it = metadata.find("nnc.crc32");
  if (it != metadata.end()) {
    char *end = nullptr;
    uint32_t want = static_cast<uint32_t>(std::strtoull(it->second.c_str(), &end, 10));
    uint32_t got = crc32(reinterpret_cast<const uint8_t *>(bytes.data()) + dataStart, dataSize);
    if (want != got)
      return bad("the data checksum does not match (the file is corrupt)");
  }
  return Status::ok();
}

} // namespace nnc::rt
