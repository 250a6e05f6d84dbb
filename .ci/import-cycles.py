#!/usr/bin/env python3
"""Import circles between the files of each crate.

A file A "uses" a file B when A names an item that B defines through a `use`
line or an inline `crate::`/`super::`/`self::` path. A circle is two or more
files that reach each other that way. Each crate's `src/` is checked on its
own (Cargo already forbids circles between crates). Re-exports are followed
to the file that defines the item, so `use crate::Foo` counts as a use of the
file where `Foo` is written; a `pub use` line itself only shows an item (a
module's face) and is not counted as a use by the file that has it. Paths
inside inline modules (`mod tests { use super::*; }`) resolve from there.

    python3 .ci/import-cycles.py            # every crate under crates/
    python3 .ci/import-cycles.py -v         # also print every edge
    python3 .ci/import-cycles.py DIR        # the crates/ of another checkout

Exits 1 and prints each circle (with the line that makes each edge) if any.
"""

import os
import re
import sys
from collections import defaultdict

ITEM_KINDS = r"(?:fn|struct|enum|trait|type|const|static|union|mod|macro_rules!)"


def strip_comments_and_strings(text):
    """Blanks comments and string/char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}, self}` -> [[a, b], [a, c, d], [a, c, e], [a]]."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def walk(prefix, s):
        if not s:
            return
        brace = s.find("{")
        if brace < 0:
            path = s.split(" as ")[0]
            path = re.sub(r"as\w+$", "", path) if "as" in path and "::" not in path.split("as")[-1] else path
            segs = [p for p in path.split("::") if p]
            if segs and segs[-1] == "self":
                segs = segs[:-1]
            results.append(prefix + segs)
            return
        head = [p for p in s[:brace].split("::") if p]
        inner = s[brace + 1:s.rfind("}")]
        for part in split_top(inner):
            walk(prefix + head, part)

    walk([], tree)
    return results


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path tuple -> file path
        self.text = {}
        for root, _, names in os.walk(src):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                path = os.path.join(root, name)
                rel = os.path.relpath(path, src)[:-3].split(os.sep)
                if rel[-1] == "mod" or (len(rel) == 1 and rel[0] in ("lib", "main")):
                    rel = rel[:-1]
                self.files[tuple(rel)] = path
        for mod, path in self.files.items():
            with open(path, encoding="utf-8") as f:
                self.text[mod] = strip_comments_and_strings(f.read())
        # Binaries (src/bin/*.rs, main.rs beside lib.rs) are crates of their own.
        self.roots = {()}

    def defines(self, mod, name):
        return re.search(r"\b" + ITEM_KINDS + r"\s+" + re.escape(name) + r"\b", self.text[mod]) is not None

    def reexports(self, mod):
        """(name, path segments) for each `pub use` item of the file (`*` for globs)."""
        out = []
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", self.text[mod]):
            for segs in expand_use_tree(m.group(1)):
                if segs:
                    alias = re.search(r"\bas\s+(\w+)", m.group(1))
                    out.append((segs[-1], segs))
        return out

    def resolve(self, mod, segs, depth=0):
        """The file (module path) that defines the item `segs` names, seen from `mod`."""
        if not segs or depth > 8:
            return None
        head, rest = segs[0], segs[1:]
        if head == "crate":
            cur = ()
        elif head == "super":
            cur = mod[:-1] if mod else ()
            while rest and rest[0] == "super":
                cur, rest = cur[:-1], rest[1:]
        elif head == "self":
            cur = mod
        elif (mod + (head,)) in self.files:
            return self.descend(mod + (head,), rest, depth)  # a child module named without self::
        else:
            return None
        return self.descend(cur, rest, depth)

    def descend(self, cur, rest, depth):
        while rest and (cur + (rest[0],)) in self.files:
            cur, rest = cur + (rest[0],), rest[1:]
        if cur not in self.files:
            return cur  # an inline module: its file
        if not rest or rest[0] == "*":
            return cur
        name = rest[0]
        if self.defines(cur, name):
            return cur
        for alias, path in self.reexports(cur):
            if alias == name and path[-1] == name:
                target = self.resolve(cur, path, depth + 1)
                if target is not None:
                    return target
            if alias == "*":
                target = self.resolve(cur, path[:-1] + [name], depth + 1)
                if target is not None and self.defines(target, name):
                    return target
        return cur

    def inline_modules(self, text):
        """(start, end, name) of each inline `mod name { ... }` block."""
        out = []
        for m in re.finditer(r"\bmod\s+(\w+)\s*\{", text):
            depth, j = 1, m.end()
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            out.append((m.end(), j, m.group(1)))
        return out

    def file_of(self, mod):
        while mod not in self.files:
            mod = mod[:-1]
        return mod

    def edges(self):
        edges = defaultdict(list)  # (a, b) -> [line numbers]
        for mod, text in self.text.items():
            inline = self.inline_modules(text)

            def scope(pos):
                names = [name for a, b, name in inline if a <= pos < b]
                return mod + tuple(names)

            def add(pos, segs):
                target = self.resolve(scope(pos), segs)
                if target is None:
                    return
                target = self.file_of(target)
                if target != mod:
                    edges[(mod, target)].append(text.count("\n", 0, pos) + 1)

            spans = []
            for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
                spans.append((m.start(), m.end()))
                if m.group(1):
                    continue  # a re-export: the module's face, not a use
                for segs in expand_use_tree(m.group(2)):
                    add(m.start(), segs)
            for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", text):
                if not any(a <= m.start() < b for a, b in spans):
                    add(m.start(), m.group(1).split("::"))
        return edges


def cycles(nodes, edges):
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            strong(v)
    return out


def main():
    verbose = "-v" in sys.argv
    dirs = [a for a in sys.argv[1:] if a != "-v"]
    checkout = dirs[0] if dirs else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    top = os.path.join(checkout, "crates")
    found = 0
    for name in sorted(os.listdir(top)):
        src = os.path.join(top, name, "src")
        if not os.path.isdir(src):
            continue
        crate = Crate(src)
        edges = crate.edges()
        rel = lambda mod: os.path.relpath(crate.files[mod], os.path.join(top, ".."))
        if verbose:
            for (a, b), lines in sorted(edges.items()):
                print(f"{rel(a)} -> {rel(b)} (line {lines[0]})")
        for comp in cycles(list(crate.files), edges):
            found += 1
            members = set(comp)
            print(f"circle in {name}: " + ", ".join(rel(m) for m in comp))
            for (a, b), lines in sorted(edges.items()):
                if a in members and b in members:
                    print(f"    {rel(a)}:{lines[0]} uses {rel(b)}")
    if found:
        print(f"{found} import circle(s)")
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
