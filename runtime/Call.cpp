//===- Call.cpp - settings written as calls -------------------------------===//

#include "runtime/Call.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>

using namespace nnc::rt;

const CallArg *Call::find(const std::string &key) const {
  for (const CallArg &a : args)
    if (a.name == key)
      return &a;
  return nullptr;
}

double Call::number(const std::string &key, double dflt) const {
  const CallArg *a = find(key);
  return a && !a->isString && !a->numbers.empty() ? a->numbers[0] : dflt;
}

std::vector<double> Call::numbers(const std::string &key) const {
  const CallArg *a = find(key);
  return a ? a->numbers : std::vector<double>{};
}

std::string Call::string(const std::string &key) const {
  const CallArg *a = find(key);
  return a && a->isString ? a->text : "";
}

/// The shortest text that reads back as `v`.
static std::string shortest(double v) {
  char buf[40];
  for (int digits = 6; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  return buf;
}

std::string Call::text() const {
  std::string s = name + "(";
  for (size_t i = 0; i < args.size(); ++i) {
    const CallArg &a = args[i];
    s += i ? ", " : "";
    if (!a.name.empty())
      s += a.name + "=";
    if (a.isString) {
      s += "\"" + a.text + "\"";
      continue;
    }
    if (a.list)
      s += "[";
    for (size_t k = 0; k < a.numbers.size(); ++k)
      s += (k ? ", " : "") + shortest(a.numbers[k]);
    if (a.list)
      s += "]";
  }
  return s + ")";
}

namespace {

/// A recursive-descent reader of the canonical text (and of what a user
/// types on the command line).
struct Reader {
  const std::string &s;
  size_t at = 0;
  std::string error;

  void blanks() {
    while (at < s.size() && std::isspace(static_cast<unsigned char>(s[at])))
      ++at;
  }
  bool eat(char c) {
    blanks();
    if (at < s.size() && s[at] == c) {
      ++at;
      return true;
    }
    return false;
  }
  bool fail(const std::string &why) {
    if (error.empty())
      error = "'" + s + "': " + why + " at column " + std::to_string(at + 1);
    return false;
  }
  bool identifier(std::string &out) {
    blanks();
    size_t b = at;
    while (at < s.size() && (std::isalnum(static_cast<unsigned char>(s[at])) || s[at] == '_'))
      ++at;
    out = s.substr(b, at - b);
    return !out.empty() && !std::isdigit(static_cast<unsigned char>(out[0]));
  }
  bool number(double &out) {
    blanks();
    std::string word;
    size_t b = at;
    if (identifier(word) && (word == "true" || word == "false")) {
      out = word == "true";
      return true;
    }
    at = b;
    const char *start = s.c_str() + at;
    char *end = nullptr;
    out = std::strtod(start, &end);
    if (end == start)
      return fail("expected a number");
    at += static_cast<size_t>(end - start);
    return true;
  }
  bool value(CallArg &a) {
    blanks();
    if (eat('"')) {
      size_t e = s.find('"', at);
      if (e == std::string::npos)
        return fail("unterminated string");
      a.isString = true;
      a.text = s.substr(at, e - at);
      at = e + 1;
      return true;
    }
    if (eat('[')) {
      a.list = true;
      if (eat(']'))
        return true;
      do {
        double v;
        if (!number(v))
          return false;
        a.numbers.push_back(v);
      } while (eat(','));
      return eat(']') || fail("expected ']'");
    }
    double v;
    if (!number(v))
      return false;
    a.numbers.push_back(v);
    return true;
  }
  bool call(Call &c) {
    if (!identifier(c.name))
      return fail("expected a name");
    if (!eat('('))
      return true;
    if (eat(')'))
      return true;
    do {
      CallArg a;
      size_t b = at;
      std::string key;
      if (identifier(key) && eat('=') && !(at < s.size() && s[at] == '='))
        a.name = key;
      else
        at = b;
      if (!value(a))
        return false;
      c.args.push_back(std::move(a));
    } while (eat(','));
    return eat(')') || fail("expected ')'");
  }
};

} // namespace

Status nnc::rt::parseCall(const std::string &text, Call &out) {
  Reader r{text};
  out = Call();
  if (!r.call(out))
    return Status::error(r.error);
  r.blanks();
  if (r.at != text.size())
    return Status::error("'" + text + "': unexpected text at column " + std::to_string(r.at + 1));
  return Status::ok();
}

Status nnc::rt::parseCallList(const std::string &text, std::vector<Call> &out) {
  Reader r{text};
  out.clear();
  r.blanks();
  if (r.at == text.size())
    return Status::ok();
  bool bracket = r.eat('[');
  if (!(bracket && r.eat(']'))) {
    do {
      Call c;
      if (!r.call(c))
        return Status::error(r.error);
      out.push_back(std::move(c));
    } while (r.eat(','));
    if (bracket && !r.eat(']'))
      return Status::error("'" + text + "': expected ']' at column " + std::to_string(r.at + 1));
  }
  r.blanks();
  if (r.at != text.size())
    return Status::error("'" + text + "': unexpected text at column " + std::to_string(r.at + 1));
  return Status::ok();
}

std::string nnc::rt::callListText(const std::vector<Call> &calls) {
  std::string s = "[";
  for (size_t i = 0; i < calls.size(); ++i)
    s += (i ? ", " : "") + calls[i].text();
  return s + "]";
}

Status nnc::rt::resolveCall(const std::vector<CallSpec> &table, const char *what, Call &c) {
  const CallSpec *spec = nullptr;
  std::string names;
  for (const CallSpec &s : table) {
    names += (names.empty() ? "" : ", ") + std::string(s.name);
    if (c.name == s.name)
      spec = &s;
  }
  if (!spec)
    return Status::error("unknown " + std::string(what) + " '" + c.name + "' (one of: " + names + ")");
  std::vector<CallArg> resolved;
  for (const ParamSpec &p : spec->params) {
    CallArg a;
    a.name = p.name;
    a.list = p.kind == ParamSpec::List;
    a.isString = p.kind == ParamSpec::String;
    if (!a.isString && !a.list)
      a.numbers = {p.dflt};
    resolved.push_back(std::move(a));
  }
  std::vector<bool> given(resolved.size(), false);
  for (size_t i = 0; i < c.args.size(); ++i) {
    const CallArg &a = c.args[i];
    size_t k = 0;
    if (a.name.empty()) {
      k = i;
      if (k >= resolved.size())
        return Status::error(std::string(what) + " " + c.name + " takes at most " +
                             std::to_string(resolved.size()) + " arguments: " + spec->help);
    } else {
      while (k < resolved.size() && resolved[k].name != a.name)
        ++k;
      if (k == resolved.size())
        return Status::error(std::string(what) + " " + c.name + " has no argument '" + a.name + "': " +
                             spec->help);
    }
    if (given[k])
      return Status::error(std::string(what) + " " + c.name + ": argument '" + resolved[k].name +
                           "' is given twice");
    const ParamSpec &p = spec->params[k];
    bool ok = p.kind == ParamSpec::String ? a.isString
              : p.kind == ParamSpec::List ? !a.isString
                                          : !a.isString && !a.list && a.numbers.size() == 1;
    if (!ok)
      return Status::error(std::string(what) + " " + c.name + ": argument '" + resolved[k].name + "' must be " +
                           (p.kind == ParamSpec::String ? "a string"
                            : p.kind == ParamSpec::List ? "a number or a list of numbers"
                                                        : "a number") +
                           ": " + spec->help);
    given[k] = true;
    std::string name = resolved[k].name;
    resolved[k] = a;
    resolved[k].name = name;
    resolved[k].list = p.kind == ParamSpec::List;
  }
  for (size_t k = 0; k < resolved.size(); ++k)
    if (spec->params[k].required && !given[k])
      return Status::error(std::string(what) + " " + c.name + " needs argument '" + resolved[k].name + "': " +
                           spec->help);
  // Absent optional lists and strings are left out: "not given".
  std::vector<CallArg> kept;
  for (size_t k = 0; k < resolved.size(); ++k)
    if (given[k] || spec->params[k].kind == ParamSpec::Number)
      kept.push_back(std::move(resolved[k]));
  c.args = std::move(kept);
  return Status::ok();
}
