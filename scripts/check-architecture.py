#!/usr/bin/env python3
"""Checks the shape docs/architecture.md describes, so it cannot drift:

1. No import cycles between modules. At every level of every crate, the
   sibling modules under one parent form a graph (A -> B when code in A or
   below it names an item defined in B or below it, re-exports followed to
   where the item is defined); that graph must be acyclic. Test modules
   (`#[cfg(test)]`) are left out: they are not part of the layering.
2. Code comments cite only what is in the repository: an invariant cited as
   `[invariant: name]` must be one of the invariants docs/architecture.md
   names, and no comment cites the design notes that live outside it.

Prints what it finds and ends with "N passed, N failed" (one check per
crate and one for the citations); exits non-zero on any failure.
"""

import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
CRATES = os.path.join(ROOT, "crates")
ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")


def strip_tests_and_comments(text):
    """The file without its `#[cfg(test)]` items, comments and string literals."""
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


class Crate:
    def __init__(self, name, src):
        self.name = name
        self.src = src
        # module path (tuple) -> file
        self.files = {}
        # module path -> source without tests/comments
        self.text = {}
        root = "lib.rs" if os.path.exists(os.path.join(src, "lib.rs")) else "main.rs"
        self.load((), os.path.join(src, root))

    def load(self, path, file):
        self.files[path] = file
        text = strip_tests_and_comments(open(file, encoding="utf-8").read())
        self.text[path] = text
        here = os.path.dirname(file)
        base = os.path.basename(file)
        folder = here if base in ("lib.rs", "main.rs", "mod.rs") else os.path.join(here, base[:-3])
        for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            child = m.group(1)
            for candidate in (os.path.join(folder, child + ".rs"), os.path.join(folder, child, "mod.rs")):
                if os.path.exists(candidate):
                    self.load(path + (child,), candidate)
                    break

    def children(self, path):
        return [p for p in self.files if len(p) == len(path) + 1 and p[: len(path)] == path]

    def reexports(self, path):
        """name -> full path (as written) of the `pub use` items of a module."""
        out = {}
        for tree in use_trees(self.text[path], public_only=True):
            for segments, alias in expand(tree):
                if segments and segments[-1] != "*":
                    out[alias or segments[-1]] = segments
        return out

    def resolve(self, at, segments, depth=0):
        """The module defining what `segments` (as written in module `at`) names."""
        if not segments or depth > 20:
            return None
        first, rest = segments[0], list(segments[1:])
        if first == "crate":
            module = ()
        elif first == "self":
            module = at
        elif first == "super":
            module = at[:-1]
            while rest and rest[0] == "super":
                module, rest = module[:-1], rest[1:]
        elif at + (first,) in self.files:
            module, rest = at + (first,), rest
        else:
            return None  # another crate, std, a local item or a generic
        while rest and module + (rest[0],) in self.files:
            module, rest = module + (rest[0],), rest[1:]
        if rest:
            target = self.reexports(module).get(rest[0])
            if target is not None:
                found = self.resolve(module, list(target) + rest[1:], depth + 1)
                if found is not None:
                    return found
        return module

    def references(self, path):
        """Modules named by code in `path` (uses and inline paths)."""
        text = self.text[path]
        found = set()
        for tree in use_trees(text, public_only=False):
            for segments, _ in expand(tree):
                target = self.resolve(path, segments)
                if target is not None:
                    found.add(target)
        for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
            target = self.resolve(path, m.group(1).split("::"))
            if target is not None:
                found.add(target)
        return found

    def cycles(self):
        refs = {p: self.references(p) for p in self.files}
        problems = []
        for parent in sorted(self.files):
            kids = self.children(parent)
            if len(kids) < 2:
                continue
            edges = {k: set() for k in kids}
            for src, targets in refs.items():
                a = next((k for k in kids if src[: len(k)] == k), None)
                if a is None:
                    continue
                for t in targets:
                    b = next((k for k in kids if t[: len(k)] == k), None)
                    if b is not None and b != a:
                        edges[a].add(b)
            for cycle, members in find_cycles(edges):
                names = [self.name + "::" + "::".join(c) for c in cycle]
                line = " -> ".join(names + names[:1])
                if len(members) > len(cycle):
                    line += " (together with " + ", ".join("::".join(m) for m in sorted(members - set(cycle))) + ")"
                problems.append(line)
        return problems


def use_trees(text, public_only):
    pattern = r"^\s*pub(?:\([^)]*\))?\s+use\s+([^;]+);" if public_only else r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);"
    return [m.group(1) for m in re.finditer(pattern, text, re.M)]


def expand(tree):
    """`a::{b, c::{d as e}}` -> [(['a','b'], None), (['a','c','d'], 'e')]."""
    tree = re.sub(r"\s+", " ", tree).strip()
    out = []

    def walk(prefix, t):
        t = t.strip()
        if not t:
            return
        brace = t.find("{")
        if brace == -1:
            alias = None
            if " as " in t:
                t, alias = [x.strip() for x in t.split(" as ", 1)]
            segs = [s for s in t.split("::") if s]
            if segs == ["self"]:
                out.append((prefix, alias))
            else:
                out.append((prefix + segs, alias))
            return
        head = [s for s in t[:brace].split("::") if s]
        inner = t[brace + 1 : t.rfind("}")]
        depth, start = 0, 0
        for i, ch in enumerate(inner):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                walk(prefix + head, inner[start:i])
                start = i + 1
        walk(prefix + head, inner[start:])

    walk([], tree)
    return out


def find_cycles(edges):
    """Per strongly connected component of more than one module: one cycle
    through it, and all its members."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        path, seen = [start], {start}
        # Walk inside the component until the start comes round again.
        while True:
            nxt = sorted(w for w in edges[path[-1]] if w in comp)
            back = start in nxt
            fresh = [w for w in nxt if w not in seen]
            if back and len(path) > 1 or not fresh:
                break
            path.append(fresh[0])
            seen.add(fresh[0])
        cycles.append((path, comp))
    return cycles


def invariant_names():
    if not os.path.exists(ARCHITECTURE):
        return set()
    text = open(ARCHITECTURE, encoding="utf-8").read()
    return set(re.findall(r"^#+\s*`\[invariant: ([a-z0-9-]+)\]`", text, re.M))


def citations():
    known = invariant_names()
    problems = []
    for folder, _, files in os.walk(CRATES):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(folder, f)
            for n, line in enumerate(open(path, encoding="utf-8"), 1):
                comment = line.split("//", 1)[1] if "//" in line else ""
                where = f"{os.path.relpath(path, ROOT)}:{n}"
                if re.search(r"\bDESIGN\b", comment):
                    problems.append(f"{where}: cites a document outside the repository")
                for name in re.findall(r"\[invariant: ([^\]]+)\]", comment):
                    if name not in known:
                        problems.append(f"{where}: cites an invariant docs/architecture.md does not name: {name}")
    return problems


def main():
    passed = failed = 0
    for name in sorted(os.listdir(CRATES)):
        src = os.path.join(CRATES, name, "src")
        if not os.path.isdir(src):
            continue
        problems = Crate(name, src).cycles()
        if problems:
            failed += 1
            print(f"architecture: crate {name}: import cycles between modules:")
            for p in problems:
                print(f"  {p}")
        else:
            passed += 1
            print(f"architecture: crate {name}: no import cycles between modules")
    problems = citations()
    if problems:
        failed += 1
        print("architecture: comments cite what the repository does not hold:")
        for p in problems:
            print(f"  {p}")
    else:
        passed += 1
        print("architecture: every citation in a comment is to docs/architecture.md")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
