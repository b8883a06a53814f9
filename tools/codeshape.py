"""The size limits `make lint` holds the tree to: no module over MAX_MODULE_LINES lines and no
function over MAX_FUNCTION_LINES, migrations aside. A long module or function is where a step
of the loop hides another; split it where the reader would look for the second part.

    python -m tools.codeshape [PATH ...]
"""

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SKIPPED_PARTS = {".venv", "migrations", ".git", "var", "node_modules", "build"}
REPO = Path(__file__).resolve().parent.parent


def python_files(roots: list[Path]) -> list[Path]:
    files = []
    for root in roots:
        candidates = [root] if root.is_file() else sorted(root.rglob("*.py"))
        files += [p for p in candidates if not SKIPPED_PARTS & set(p.relative_to(REPO).parts)]
    return files


def problems(path: Path) -> list[str]:
    source = path.read_text()
    name = path.relative_to(REPO)
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno}: {node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def main(argv: list[str]) -> int:
    roots = [Path(a).resolve() for a in argv] or [REPO]
    found = [problem for path in python_files(roots) for problem in problems(path)]
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
