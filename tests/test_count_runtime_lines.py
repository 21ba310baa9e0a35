"""The runtime line counter (benchmarks/experiments/count_runtime_lines.py) leaves out blank
lines, comments and docstrings, and only those."""

from conftest import benchmark_module

SOURCE = '''"""Module docstring,
two lines."""

import os  # a comment after code counts


# a comment line
def f(x):
    """Docstring."""
    text = """not a docstring:
    a string that is code"""
    return x


class C:
    """One line."""
'''


def test_code_lines_leave_out_blank_lines_comments_and_docstrings():
    count = benchmark_module("experiments/count_runtime_lines").count
    assert count(SOURCE) == (16, 6)  # import, def, text (2 lines), return, class
