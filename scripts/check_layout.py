#!/usr/bin/env python3
"""The layout rules of docs/ARCHITECTURE.md, checked on src/ (exit 1 on a
breach, naming it):

1. No import cycle between top-level modules (`crate::x` in the code of
   module y, tests left out, is an edge y -> x).
2. `config` and `transport` import nothing else of the crate.
3. No import cycle between files. A file's edges are the files whose items
   it names (`crate::a::b`, `super::x`, a child `x::` of its own module); a
   `pub use` re-export and a `mod` declaration are a module's facade, not a
   use, and are left out.
4. No source file over 500 lines (tests go in a sibling `tests.rs`).

Run: python3 scripts/check_layout.py (scripts/test.sh runs it).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LEAVES = ("config", "transport")
MAX_LINES = 500


def sources():
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def module_path(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return [] if rel == ["lib"] else rel


def code(path):
    """The file's code: tests, comments and string literals left out."""
    text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def paths_named(text):
    """Every `crate::a::b` path, grouped ones (`crate::{a, b::c}`) spread."""
    for m in re.finditer(r"crate::((?:\w+::)*)(\w+|\{[^}]*\})", text):
        prefix = [p for p in m.group(1).split("::") if p]
        last = m.group(2)
        if last.startswith("{"):
            for item in re.split(r",", last[1:-1]):
                item = item.strip().split(" as ")[0]
                if item:
                    yield prefix + [p for p in item.split("::") if p and p != "{"]
        else:
            yield prefix + [last]


def main():
    problems = []
    files = [p for p in sources() if os.path.basename(p) != "tests.rs"]
    crate_files = [p for p in files if not module_path(p)[:1] == ["bin"] and not p.endswith("main.rs")]

    # 1 and 2: top-level modules.
    top = {}
    for p in crate_files:
        mod = module_path(p)
        if not mod:
            continue
        deps = top.setdefault(mod[0], set())
        for path in paths_named(code(p)):
            if path and path[0] != mod[0]:
                deps.add(path[0])
    modules = set(top)
    graph = {m: {d for d in deps if d in modules} for m, deps in top.items()}
    for cycle in sccs(graph):
        problems.append("top-level modules import each other in a circle: " + ", ".join(cycle))
    for leaf in LEAVES:
        if graph.get(leaf):
            problems.append(f"`{leaf}` must import nothing else of the crate; it imports {', '.join(sorted(graph[leaf]))}")

    # 3: files.
    by_module = {tuple(module_path(p)): p for p in crate_files}

    def resolve(parts):
        for n in range(len(parts), 0, -1):
            hit = by_module.get(tuple(parts[:n]))
            if hit:
                return hit
        return None

    edges = {}
    for p in crate_files:
        me = module_path(p)
        text = code(p)
        text = re.sub(r"pub(\([a-z]+\))? use [^;]*;", "", text)
        text = re.sub(r"(pub(\([a-z]+\))? )?mod \w+;", "", text)
        found = set()
        for path in paths_named(text):
            found.add(resolve(path))
        for m in re.finditer(r"((?:super::)+)((?:\w+::)*)(\w+|\{[^}]*\})", text):
            base = me[: len(me) - m.group(1).count("super::")]
            middle = [x for x in m.group(2).split("::") if x]
            last = m.group(3)
            names = re.findall(r"\w+", last) if last.startswith("{") else [last]
            for name in names:
                found.add(resolve(base + middle + ([] if name == "self" else [name])))
        for child, target in by_module.items():
            if len(child) == len(me) + 1 and list(child[:-1]) == me:
                if re.search(r"(?<![\w:])(?:self::)?" + child[-1] + r"::", text):
                    found.add(target)
        found.discard(None)
        found.discard(p)
        edges[p] = found
    for cycle in sccs(edges):
        names = [os.path.relpath(c, os.path.join(ROOT, "..")) for c in cycle]
        problems.append("files import each other in a circle: " + ", ".join(names))

    # 4: sizes.
    for p in sorted(files):
        lines = sum(1 for _ in open(p, encoding="utf-8"))
        if lines > MAX_LINES:
            rel = os.path.relpath(p, os.path.join(ROOT, ".."))
            problems.append(f"{rel} has {lines} lines (at most {MAX_LINES}: split it by concept, tests in a sibling tests.rs)")

    for problem in problems:
        print("layout:", problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"layout: {len(graph)} top-level modules and {len(edges)} files, no cycle; config and transport are leaves; no file over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
