//===- AST.cpp - printing the .nn syntax tree -----------------------------===//
//
// One node per line, children indented by two spaces, each with its source
// position as `@line:col`, so lit tests can pin structure and locations.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/AST.h"

#include "llvm/Support/Format.h"

using namespace nnc;

namespace {
class ASTPrinter {
public:
  explicit ASTPrinter(llvm::raw_ostream &os) : os(os) {}

  void print(const File &file) {
    for (const BlockDef &blk : file.blocks) {
      os << "block " << blk.name;
      at(blk.loc);
      os << "\n";
      for (const BlockParam &p : blk.params) {
        line(1, p.loc) << "arg " << p.name;
        at(p.loc);
        os << "\n";
        if (p.dflt)
          print(*p.dflt, 2);
      }
      for (const Stmt &s : blk.stmts)
        print(s);
    }
    for (const Model &m : file.models)
      print(m);
    if (file.train) {
      line(0, file.train->loc) << "train";
      at(file.train->loc);
      os << "\n";
      for (const KwArg &kw : file.train->entries) {
        line(1, kw.loc) << "set " << kw.name;
        at(kw.loc);
        os << "\n";
        print(*kw.value, 2);
      }
    }
  }

private:
  llvm::raw_ostream &line(int depth, Loc loc) {
    os.indent(depth * 2);
    return os;
  }
  void at(Loc loc) { os << " @" << loc.line << ":" << loc.col; }

  void print(const Model &m) {
    os << "model " << m.name;
    at(m.loc);
    os << "\n";
    for (const Stmt &s : m.stmts)
      print(s);
  }

  void printType(const TypeSpec &t) {
    os << t.element << "[";
    for (size_t i = 0; i < t.dims.size(); ++i) {
      if (i)
        os << ", ";
      if (t.dims[i].symbol.empty())
        os << t.dims[i].size;
      else
        os << t.dims[i].symbol;
    }
    os << "]";
  }

  void print(const Stmt &s) {
    static const char *kinds[] = {"input", "param", "frozen",
                                  "let",   "output", "minimize", "return"};
    line(1, s.loc) << kinds[s.kind];
    switch (s.kind) {
    case Stmt::Input:
    case Stmt::Param:
    case Stmt::Frozen:
      os << " " << s.name << ": ";
      printType(s.type);
      break;
    case Stmt::Assign:
    case Stmt::Minimize:
      os << " " << s.name;
      break;
    case Stmt::Output:
      for (auto &[name, loc] : s.names)
        os << " " << name;
      break;
    case Stmt::Return:
      break;
    }
    at(s.loc);
    os << "\n";
    if (s.value)
      print(*s.value, 2);
  }

  void print(const Expr &e, int depth) {
    line(depth, e.loc);
    switch (e.kind) {
    case Expr::Number:
      os << "number " << llvm::format("%g", e.number);
      break;
    case Expr::String:
      os << "string \"" << e.text << "\"";
      break;
    case Expr::Bool:
      os << "bool " << (e.number != 0 ? "true" : "false");
      break;
    case Expr::Name:
      os << "name " << e.text;
      break;
    case Expr::List:
      os << "list";
      break;
    case Expr::Neg:
      os << "neg";
      break;
    case Expr::Binary:
      os << "binary " << e.text;
      break;
    case Expr::Call:
      os << "call " << e.text;
      break;
    }
    at(e.loc);
    os << "\n";
    for (const ExprPtr &a : e.args)
      print(*a, depth + 1);
    for (const KwArg &kw : e.kwargs) {
      line(depth + 1, kw.loc) << kw.name << " =";
      at(kw.loc);
      os << "\n";
      print(*kw.value, depth + 2);
    }
  }

  llvm::raw_ostream &os;
};
} // namespace

void nnc::dumpAST(const File &file, llvm::raw_ostream &os) {
  ASTPrinter(os).print(file);
}
