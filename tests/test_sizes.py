"""Files of the package stay readable: at most 400 lines unless the module's docstring says why in a line
starting "(Over 400 lines:", and no function longer than 80 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_LINES, FUNCTION_LINES = 400, 80


def test_files_and_functions_of_the_package_stay_within_their_limits():
    long_files, long_functions = [], []
    for path in sorted((ROOT / "trackstream").rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text, str(path))
        doc = ast.get_docstring(tree) or ""
        if text.count("\n") > FILE_LINES and "(Over 400 lines:" not in doc:
            long_files.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long_files, long_files
    assert not long_functions, long_functions
