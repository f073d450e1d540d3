"""A small mutation check: plant one bug at a time in a core module, run that module's
tests only, and list the bugs no test noticed (the survivors).

    nice -n 10 python bench/mutation_check.py [--budget-s 1500] [--per-module 12] \\
        [--only metrics,keys] [--lines htf/metrics.py:60,...] [--out bench/results_mutation.md]

Mutants are made on the syntax tree (comparison and arithmetic operators swapped, integer
constants moved by one, ``and``/``or`` swapped, a ``not`` dropped, a call statement
removed, a returned value replaced by None) in the functions listed for each module, and
picked with a fixed seed, so a rerun checks the same mutants. Each runs in a throw-away
copy of the repository: the working tree is never touched. A mutant counts as caught when
its tests fail or run past 3x their clean time.
"""
from __future__ import annotations

import argparse
import ast
import copy
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    name: str
    module: str                       # path relative to the repository
    functions: tuple[str, ...]        # only mutate inside these (empty: every function)
    tests: tuple[str, ...]            # pytest arguments: this module's tests only


TARGETS = (
    Target("metrics", "htf/metrics.py", ("gt_map", "box_to_pixels", "prediction_mask", "ciou", "summarize",
                                         "_flatten_boxes"), ("tests/test_htf_metrics.py",)),
    Target("loss", "htf/loss.py", (), ("tests/test_htf_loss.py",)),
    Target("transforms", "train/transforms.py", (), ("tests/test_train_transforms.py",)),
    Target("inputs", "htf/inputs.py", ("geometry", "fit_time", "eval_arrays", "official_flow"),
           ("tests/test_train_transforms.py",)),
    Target("keys", "htf/sample.py", ("sample_key", "key_to_id", "decode_sample"),
           ("tests/test_sample_keys.py", "tests/test_fuzz_readers.py")),
    Target("decode", "pipeline/decode.py", ("choose_keyframe", "official_keyframe_from_entry", "stored_size",
                                            "checked_stored_size", "display_rotation", "_convert",
                                            "_decode_by_seek", "_decode_from_seek_point", "_decode_by_count"),
           ("tests/test_pipeline_decode.py", "tests/test_nasty_inputs.py")),
    Target("resume", "train/engine.py", ("wants_resume", "restore", "save_checkpoint", "_check_same_model"),
           ("tests/test_train_resume_equivalence.py", "tests/test_train_eval_errors.py", "-k",
            "resume or equivalence or same")),
)

_COMPARE_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}


@dataclass(frozen=True)
class Mutant:
    target: str
    line: int
    description: str
    path: tuple[int, ...]         # index of the node in the walk order of the tree
    kind: str


def _in_functions(tree: ast.AST, names: tuple[str, ...]) -> set[int]:
    """ids of the nodes inside the chosen functions (all functions when ``names`` is empty)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (not names or node.name in names):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def _is_docstring(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    return isinstance(parent, ast.Expr) and isinstance(getattr(node, "value", None), str)


def find_mutants(target: Target, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    inside = _in_functions(tree, target.functions)
    parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    found: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) not in inside:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and type(node.ops[0]) in _COMPARE_SWAP:
            new = _COMPARE_SWAP[type(node.ops[0])].__name__
            found.append(Mutant(target.name, line, f"{type(node.ops[0]).__name__} -> {new}", (index,), "compare"))
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
            new = _BINOP_SWAP[type(node.op)].__name__
            found.append(Mutant(target.name, line, f"{type(node.op).__name__} -> {new}", (index,), "binop"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and not _is_docstring(node, parents):
            found.append(Mutant(target.name, line, f"{node.value} -> {node.value + 1}", (index,), "int"))
        elif isinstance(node, ast.BoolOp):
            new = "Or" if isinstance(node.op, ast.And) else "And"
            found.append(Mutant(target.name, line, f"{type(node.op).__name__} -> {new}", (index,), "boolop"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Mutant(target.name, line, "drop 'not'", (index,), "not"))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            found.append(Mutant(target.name, line, f"remove call {ast.unparse(node.value)[:50]}", (index,), "call"))
        elif isinstance(node, ast.Return) and node.value is not None:
            found.append(Mutant(target.name, line, f"return None instead of {ast.unparse(node.value)[:40]}",
                                (index,), "return"))
    return found


def apply_mutant(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    node = list(ast.walk(tree))[mutant.path[0]]
    if mutant.kind == "compare":
        node.ops[0] = _COMPARE_SWAP[type(node.ops[0])]()
    elif mutant.kind == "binop":
        node.op = _BINOP_SWAP[type(node.op)]()
    elif mutant.kind == "int":
        node.value = node.value + 1
    elif mutant.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif mutant.kind == "not":
        replacement = copy.deepcopy(node.operand)
        node.__class__ = ast.UnaryOp
        node.op, node.operand = ast.UAdd(), ast.Call(ast.Name("bool", ast.Load()), [replacement], [])
    elif mutant.kind == "call":
        node.value = ast.Constant(None)
    elif mutant.kind == "return":
        node.value = ast.Constant(None)
    return ast.unparse(ast.fix_missing_locations(tree))


def run_tests(copy_root: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, float]:
    """(tests passed, seconds)."""
    start = time.time()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(cmd, cwd=copy_root, capture_output=True, text=True, timeout=timeout,
                              env={**_env(), "PYTHONPATH": str(copy_root)})
    except subprocess.TimeoutExpired:
        return False, time.time() - start
    return done.returncode == 0, time.time() - start


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def make_copy() -> Path:
    root = Path(tempfile.mkdtemp(prefix="htf-mutation-"))
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", "shards", "runs", "out*")
    shutil.copytree(REPO, root / "repo", ignore=ignore, symlinks=True)
    return root / "repo"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=1500, help="stop starting new mutants after this")
    p.add_argument("--per-module", type=int, default=12, help="mutants checked per module (seeded pick)")
    p.add_argument("--only", help="comma-separated target names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines", help="check every mutant on these lines instead, e.g. "
                                   "htf/metrics.py:60,htf/loss.py:72 (after tests were added for survivors)")
    p.add_argument("--out", default=str(REPO / "bench" / "results_mutation.md"))
    args = p.parse_args(argv)
    targets = [t for t in TARGETS if not args.only or t.name in args.only.split(",")]
    root = make_copy()
    start = time.time()
    rows: list[tuple[Target, Mutant, str, float]] = []
    clean: dict[str, float] = {}
    try:
        for target in targets:
            path = root / target.module
            original = path.read_text()
            ok, seconds = run_tests(root, target.tests, timeout=900)
            clean[target.name] = seconds
            print(f"[{target.name}] clean tests {'pass' if ok else 'FAIL'} in {seconds:.1f} s", flush=True)
            if not ok:
                continue
            mutants = find_mutants(target, original)
            picked = random.Random(f"{args.seed}-{target.name}").sample(mutants, min(args.per_module, len(mutants)))
            if args.lines:       # every mutant on the given lines instead of the seeded pick
                wanted = {tuple(item.rsplit(":", 1)) for item in args.lines.split(",")}
                picked = [m for m in mutants if (target.module, str(m.line)) in wanted]
            for mutant in sorted(picked, key=lambda m: m.line):
                if time.time() - start > args.budget_s:
                    rows.append((target, mutant, "not run (budget)", 0.0))
                    continue
                try:
                    path.write_text(apply_mutant(original, mutant))
                    passed, took = run_tests(root, target.tests, timeout=max(60.0, 3 * seconds))
                finally:
                    path.write_text(original)
                verdict = "SURVIVED" if passed else "caught"
                rows.append((target, mutant, verdict, took))
                print(f"  {verdict:8s} {target.module}:{mutant.line} {mutant.description} ({took:.0f} s)", flush=True)
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    write_report(Path(args.out), targets, rows, clean, time.time() - start, args)
    return 0


def write_report(out: Path, targets: list[Target], rows: list, clean: dict[str, float], total_s: float,
                 args: argparse.Namespace) -> None:
    lines = ["# Mutation check", "",
             f"`nice -n 10 python bench/mutation_check.py --per-module {args.per_module} --budget-s "
             f"{args.budget_s:g}` (seed {args.seed}); {total_s / 60:.1f} min on the shared 2-core machine.",
             "One planted bug at a time in a core module, that module's tests only (listed below); a",
             "mutant is caught when the tests fail (or run past 3x their clean time).", "",
             "| module | tests | mutants run | caught | survived | clean test time |", "|---|---|---|---|---|---|"]
    for t in targets:
        mine = [r for r in rows if r[0] is t and r[2] in ("caught", "SURVIVED")]
        caught = sum(r[2] == "caught" for r in mine)
        lines.append(f"| {t.module} | {' '.join(t.tests)} | {len(mine)} | {caught} | {len(mine) - caught} | "
                     f"{clean.get(t.name, float('nan')):.0f} s |")
    lines += ["", "## Survivors", ""]
    survivors = [r for r in rows if r[2] == "SURVIVED"]
    if not survivors:
        lines.append("None.")
    for t, m, _, _ in survivors:
        lines.append(f"- `{t.module}:{m.line}` {m.description}")
    skipped = [r for r in rows if r[2].startswith("not run")]
    if skipped:
        lines += ["", f"{len(skipped)} picked mutant(s) not run for want of time (budget)."]
    out.write_text("\n".join(lines) + "\n")
    print(f"report: {out}")


if __name__ == "__main__":
    sys.exit(main())
