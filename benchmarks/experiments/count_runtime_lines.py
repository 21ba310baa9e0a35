"""Line counts of the runtime (issue 19): `vsr_pipeline/` minus `vsr_pipeline/train/`, per folder.

"all" counts every line of every .py file; "code" leaves out blank lines, comment-only lines and
the lines of docstrings (the first string statement of a module, class or function).

    python benchmarks/experiments/count_runtime_lines.py                 # the working tree
    python benchmarks/experiments/count_runtime_lines.py --rev 032e629^  # a commit, read with git show
    python benchmarks/experiments/count_runtime_lines.py --rev 032e629^ --new-since   # files the
        # working tree has that the commit did not
    python benchmarks/experiments/count_runtime_lines.py --without-features    # same behaviour
    python benchmarks/experiments/count_runtime_lines.py --copy-to /tmp/now && \
        duplicates --repo /tmp/now --min-lines 4                           # duplicates, runtime only
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize
from collections import defaultdict
from pathlib import Path

PACKAGE = "vsr_pipeline"
# train/ is not the runtime; before the reorganisation the face lab (training, evaluation, sources)
# sat in faces/ and has since moved to train/, so it is left out of the old trees too.
LEFT_OUT = ("vsr_pipeline/train/", "vsr_pipeline/faces/evaluate.py", "vsr_pipeline/faces/train.py",
            "vsr_pipeline/faces/sources.py")
# Files added since 032e629^ for new features (not the reorganisation): --without-features leaves
# them out so that the same behaviour can be compared with the old tree.
FEATURES = ("vsr_pipeline/_upload.py", "vsr_pipeline/bench.py", "vsr_pipeline/engines/build.py",
            "vsr_pipeline/io/damage.py", "vsr_pipeline/run/batch.py",
            "vsr_pipeline/run/batch_metrics.py", "vsr_pipeline/run/chunks.py",
            "vsr_pipeline/run/journal.py", "vsr_pipeline/run/record.py")
SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
               tokenize.ENCODING, tokenize.ENDMARKER}


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def count(text: str) -> tuple[int, int]:
    """(all lines, code lines) of one Python source."""
    docs = docstring_lines(ast.parse(text))
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in SKIP_TOKENS:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(text.splitlines()), len(code - docs)


def runtime_files(rev: str | None) -> dict[str, str]:
    if rev is None:
        paths = sorted(str(p) for p in Path(PACKAGE).rglob("*.py"))
        return {p: Path(p).read_text() for p in paths if not p.startswith(LEFT_OUT)}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, PACKAGE], check=True,
                           capture_output=True, text=True).stdout.split()
    return {p: subprocess.run(["git", "show", f"{rev}:{p}"], check=True, capture_output=True,
                              text=True).stdout
            for p in names if p.endswith(".py") and not p.startswith(LEFT_OUT)}


def folder(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) + "/" if len(parts) > 2 else PACKAGE + "/ (top level)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="count this commit instead of the working tree")
    parser.add_argument("--new-since", action="store_true",
                        help="count only working-tree files that --rev did not have")
    parser.add_argument("--without-features", action="store_true",
                        help="leave out the files added for new features since 032e629^")
    parser.add_argument("--copy-to", type=Path,
                        help="also write the counted files there (for `duplicates --repo`)")
    args = parser.parse_args()
    if args.new_since:
        old = runtime_files(args.rev)
        files = {p: t for p, t in runtime_files(None).items() if p not in old}
    else:
        files = runtime_files(args.rev)
    if args.without_features:
        files = {p: t for p, t in files.items() if p not in FEATURES}
    if args.copy_to:
        for path, text in files.items():
            (args.copy_to / path).parent.mkdir(parents=True, exist_ok=True)
            (args.copy_to / path).write_text(text)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for path, text in files.items():
        lines, code = count(text)
        for key in (folder(path), "total"):
            totals[key][0] += 1
            totals[key][1] += lines
            totals[key][2] += code
        if args.new_since:
            print(f"  {path}: {lines} lines, {code} code")
    print("| folder | files | all lines | code lines |\n|---|---|---|---|")
    for key in sorted(k for k in totals if k != "total") + ["total"]:
        files_n, lines, code = totals[key]
        print(f"| {key} | {files_n} | {lines:,} | {code:,} |")


if __name__ == "__main__":
    main()
