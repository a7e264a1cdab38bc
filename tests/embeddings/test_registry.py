"""The registry: listing the methods loads none of them (nor torch); a class is registered only
under a name METHODS lists, and only once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cce_bench.embeddings import get_method, method_names, register
from cce_bench.embeddings.registry import METHODS


def test_listing_and_looking_up_methods_needs_no_torch():
    code = ("import sys\n"
            "from cce_bench.embeddings import get_method, methods\n"
            "assert [m.family for m in methods()][0] == 'uncompressed'\n"
            "assert get_method('cce').paper.startswith('Tsang & Ahle')\n"
            "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_methods_are_listed_once_each_in_the_order_of_methods():
    assert method_names() == [info.name for info in METHODS]
    assert len(set(method_names())) == len(METHODS)
    assert all(get_method(name).cls.method_name == name for name in method_names())


def test_a_class_under_a_name_methods_does_not_list_fails():
    with pytest.raises(RuntimeError, match="'nope' is not listed in .*METHODS; add its entry"):
        register("nope")(type("Nope", (), {}))


def test_a_name_registered_twice_fails():
    get_method("hash").cls  # the real class is registered
    with pytest.raises(RuntimeError, match="embedding method 'hash' is registered twice"):
        register("hash")(type("AnotherHash", (), {}))
