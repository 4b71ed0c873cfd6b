#!/usr/bin/env python3
"""docs/architecture.md's map of the code, checked against the code.

Each top-level module under src/ may import only what its row in the
map in docs/architecture.md names (its "may import" column), and no two
modules import each other, directly or through others. Reads `crate::` and
`super::` paths in the source (tests excluded); prints every breach and
exits 1 if there is one.
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")


def allowed_imports():
    """Module -> the modules its row in the map says it may import."""
    readme = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    table = readme.split("\nsrc/ ", 1)[1].split("\nopenapi/", 1)[0].splitlines()[1:]
    column = readme.split("\nsrc/ ", 1)[1].splitlines()[0].index("may import") + len("src/ ")
    rows, name = {}, None
    for line in table:
        if line[2:3].strip():
            name = line[2:19].strip().removesuffix("/").removesuffix(".rs")
            rows[name] = ""
        rows[name] += " " + line[column:]
    return {name: {m for m in re.split(r"[,\s]+", text) if m and m not in ("-", "nothing", "(a", "leaf)")}
            for name, text in rows.items()}


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3]
    return rel.removesuffix("/mod").replace("/", "::")


def is_module(name):
    base = os.path.join(SRC, *name.split("::"))
    return os.path.exists(base + ".rs") or os.path.exists(os.path.join(base, "mod.rs"))


def paths_in(source):
    """Every `crate::a::b` or `super::a` path, groups `crate::{a, b}` unfolded."""
    source = re.sub(r"//.*", "", source.split("#[cfg(test)]")[0])
    for kind, rest in re.findall(r"\b(crate|super)::((?:super::)*\{[^}]*\}|[a-z_][a-z_:]*)", source):
        if rest.startswith("{") or "{" in rest:
            prefix, group = rest.split("{", 1)
            for item in group.rstrip("}").split(","):
                yield kind, prefix + item.strip()
        else:
            yield kind, rest


def edges():
    out = collections.defaultdict(set)
    for folder, _, files in os.walk(SRC):
        for file in files:
            path = os.path.join(folder, file)
            module = module_of(path)
            if module in ("lib", "main") or not file.endswith(".rs"):
                continue
            for kind, rest in paths_in(open(path, encoding="utf-8").read()):
                base = [] if kind == "crate" else module.split("::")[:-1]
                parts = [p for p in rest.split("::") if p]
                while parts and parts[0] == "super":
                    base, parts = base[:-1], parts[1:]
                target = next((t for k in range(len(parts), 0, -1)
                               if is_module(t := "::".join(base + parts[:k]))), "::".join(base))
                if target and target != module and not module.startswith(target + "::") \
                        and not target.startswith(module + "::"):
                    out[module].add(target)
    return out


def cycles(graph):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if v not in index:
            visit(v)
    return found


def main():
    allowed = allowed_imports()
    graph = edges()
    breaches = []
    for module, targets in sorted(graph.items()):
        top = module.split("::")[0]
        if top not in allowed:
            breaches.append(f"src/{top} has no row in the map")
            continue
        for target in sorted(targets):
            dep = target.split("::")[0]
            if dep != top and dep not in allowed[top]:
                breaches.append(f"{module} imports {target}: the map does not let {top} import {dep}")
    for component in cycles(graph):
        breaches.append("import cycle: " + " -> ".join(component))
    for line in sorted(set(breaches)):
        print(line)
    if breaches:
        sys.exit(1)
    print(f"layers: {len(graph)} modules import only what the map allows, no cycles")


if __name__ == "__main__":
    main()
