"""The Python-line oracle: tokenize's verdict, the bracket / quote scan, and the one fault each line is
sorted into, by hand and as properties of random lines."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdiff.app.code_oracle import FAULTS, balanced, bracket_fault, line_fault, tokenizes


@pytest.mark.parametrize("line, ok", [
    ("def f(x):", True), ("else:", True), ("x = 'it''s'", True), ("print(f'{x}')", True), ("return", True),
    ("a = b[1:2]  # note (", True), ("'''a'''", True),
    ("foo(a,", False),                      # opens a bracket: EOF in multi-line statement
    ("a)", False), ('"""doc', False), ("x = 'abc", False), ("$x", False), ("x = 1 ?", False),
    ("s = 'a' \\", False)])
def test_tokenizes(line, ok):
    assert tokenizes(line) is ok


@pytest.mark.parametrize("line, ok", [
    ("f(a[1], {2: (3)})", True), ("x = ')'", True), ("s = \"a\\\"b\"", True), ("a  # (", True),
    ("'''a\"'''", True), ("", True),
    ("foo(a,", False), ("a)", False), ("(]", False), ("x = 'abc", False), ('"""doc', False), ("[)", False)])
def test_balanced(line, ok):
    assert balanced(line) is ok


@pytest.mark.parametrize("line, fault", [
    ("x = f(a)", "tokenizes"), ("a = b[1:2]  # note (", "tokenizes"),
    ("foo(a,", "open bracket"), ("d = {1: [2,", "open bracket"),
    ("a)", "mismatched bracket"), ("f(a))", "mismatched bracket"), ("x = b]", "mismatched bracket"),
    ("x = 'abc", "open string"), ('"""doc', "open string"), ("f('a", "open string"),   # the string first
    ("$x", "other"), ("x = 1 ?", "other"), ("s = 'a' \\", "other")])
def test_each_line_gets_its_fault(line, fault):
    assert line_fault(line) == fault


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="()[]{}'\"#\\ ax=:,$", max_size=12))
def test_faults_partition_lines_as_the_two_rules_do(line):
    fault = line_fault(line)
    assert fault in FAULTS
    assert (fault == "tokenizes") == tokenizes(line)
    if fault != "tokenizes":
        assert (fault != "other") == (not balanced(line)) == (bracket_fault(line) is not None)
