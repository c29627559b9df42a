"""GEARS condition strings: parsing, names, order-free ids and gene checks, against hand-written cases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from omicformer.scgpt._conditions import (
    check_genes_known,
    close_symbols,
    condition_id,
    condition_name,
    parse_condition,
    parse_conditions,
)


# ------------------------------------------------------------------------------ parse_condition
@pytest.mark.parametrize(
    ("condition", "genes"),
    [
        ("ctrl", ()),
        ("KLF1+ctrl", ("KLF1",)),
        ("ctrl+KLF1", ("KLF1",)),
        ("KLF1+CEBPA", ("KLF1", "CEBPA")),
        ("CEBPA+KLF1", ("CEBPA", "KLF1")),  # order as written
        ("KLF1+CEBPA+SPI1", ("KLF1", "CEBPA", "SPI1")),
        ("C3orf72+ctrl", ("C3orf72",)),  # case kept as written
    ],
)
def test_parse_condition_valid(condition, genes):
    assert parse_condition(condition) == genes


def test_parse_condition_custom_control_label():
    assert parse_condition("NT", control="NT") == ()
    assert parse_condition("KLF1+NT", control="NT") == ("KLF1",)
    assert parse_condition("NT+KLF1", control="NT") == ("KLF1",)
    assert parse_condition("KLF1+CEBPA", control="NT") == ("KLF1", "CEBPA")
    # with another control label, "ctrl" is not special any more
    with pytest.raises(ValueError, match="Cannot parse"):
        parse_condition("NT+NT", control="NT")


@pytest.mark.parametrize(
    "bad",
    [None, 3, 1.5, float("nan"), ("KLF1", "ctrl"), b"KLF1+ctrl"],
)
def test_parse_condition_non_string_raises(bad):
    with pytest.raises(ValueError, match="is not a string"):
        parse_condition(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "A++B",
        "A+",
        "+A",
        "+",
        " A+ctrl",
        "A+ctrl ",
        "A + B",
        "A+A",
        "A+B+A",
        "ctrl+ctrl",
        "ctrl+ctrl+ctrl",
        " ctrl",
    ],
)
def test_parse_condition_malformed_raises(bad):
    with pytest.raises(ValueError, match="Cannot parse condition"):
        parse_condition(bad)


# ------------------------------------------------------------------------------ parse_conditions
def test_parse_conditions_returns_each_distinct_condition_once():
    values = ["ctrl", "A+ctrl", "ctrl", "A+B", "A+ctrl", "ctrl+C"]
    assert parse_conditions(values) == {
        "ctrl": (),
        "A+ctrl": ("A",),
        "A+B": ("A", "B"),
        "ctrl+C": ("C",),
    }
    assert list(parse_conditions(values)) == ["ctrl", "A+ctrl", "A+B", "ctrl+C"]


def test_parse_conditions_lists_every_bad_string_in_one_message():
    values = ["ctrl", "A++B", "B+ctrl", "C+", "A++B", "D+D", "E+ctrl"]
    with pytest.raises(ValueError, match="do not parse") as err:
        parse_conditions(values)
    msg = str(err.value)
    assert msg.startswith("3 condition(s) do not parse")
    for bad in ("'A++B'", "'C+'", "'D+D'"):
        assert bad in msg
    for good in ("'B+ctrl'", "'E+ctrl'"):
        assert good not in msg
    assert "pass control=" in msg


def test_parse_conditions_custom_control_and_non_strings():
    assert parse_conditions(["NT", "A+NT"], control="NT") == {"NT": (), "A+NT": ("A",)}
    with pytest.raises(ValueError, match=re.escape("2 condition(s) do not parse: None, 7")):
        parse_conditions(["ctrl", None, 7])


def test_parse_conditions_truncates_long_lists():
    bad = [f"G{i}+" for i in range(10)]
    with pytest.raises(ValueError, match="do not parse") as err:
        parse_conditions(bad)
    msg = str(err.value)
    assert msg.startswith("10 condition(s) do not parse")
    assert "'G7+'" in msg and "'G8+'" not in msg and " ..." in msg


# ------------------------------------------------------------------------------ names and ids
@pytest.mark.parametrize(
    ("genes", "name"),
    [((), "ctrl"), (("A",), "A+ctrl"), (("A", "B"), "A+B"), (("B", "A", "C"), "B+A+C")],
)
def test_condition_name_and_round_trip(genes, name):
    assert condition_name(genes) == name
    assert condition_name(list(genes)) == name
    assert parse_condition(condition_name(genes)) == genes


def test_condition_name_custom_control_round_trip():
    assert condition_name((), control="NT") == "NT"
    assert condition_name(("A",), control="NT") == "A+NT"
    for genes in [(), ("A",), ("A", "B")]:
        assert parse_condition(condition_name(genes, "NT"), "NT") == genes


def test_condition_id_is_order_free():
    assert condition_id(("A", "B")) == condition_id(("B", "A"))
    assert condition_id(parse_condition("A+B")) == condition_id(parse_condition("B+A"))
    assert condition_id(parse_condition("A+ctrl")) == condition_id(parse_condition("ctrl+A"))
    assert condition_id(("A", "B")) != condition_id(("A",))
    assert condition_id(("A", "B")) != condition_id(("A", "C"))
    assert condition_id(()) == frozenset()
    # hashable: usable as a set member / dict key
    assert len({condition_id(("A", "B")), condition_id(("B", "A")), condition_id(("A",))}) == 2


# ------------------------------------------------------------------------------ gene checks
KNOWN = ["GATA1", "KLF1", "SPI1", "CEBPA", "CEBPB", "TP53"]


def test_check_genes_known_passes_when_all_known():
    assert check_genes_known(["KLF1", "GATA1", "KLF1"], KNOWN, "the genes of adata") is None
    assert check_genes_known([], KNOWN, "the genes of adata") is None
    assert check_genes_known(np.array(["TP53"]), np.array(KNOWN), "x") is None


def test_check_genes_known_names_missing_genes_and_suggests_close_symbols():
    with pytest.raises(KeyError) as err:
        check_genes_known(["KLF1", "GATA", "NOTAGENEATALL"], KNOWN, "the genes of adata")
    msg = err.value.args[0]
    assert "Perturbed gene(s) not in the genes of adata" in msg
    assert "'GATA' (did you mean 'GATA1'?)" in msg
    assert "'NOTAGENEATALL'" in msg and "'NOTAGENEATALL' (did you mean" not in msg
    assert "'KLF1'" not in msg  # known genes are not listed


def test_check_genes_known_suggestions_are_case_insensitive_and_keep_known_spelling():
    with pytest.raises(KeyError) as err:
        check_genes_known(["gata1"], KNOWN, "the model's genes")
    assert "'gata1' (did you mean 'GATA1'?)" in err.value.args[0]
    assert sorted(close_symbols("cebp", KNOWN)) == ["CEBPA", "CEBPB"]
    assert close_symbols("ZZZZZZ", KNOWN) == []
    assert len(close_symbols("CEBPX", ["CEBPA", "CEBPB", "CEBPD", "CEBPE"], n=3)) == 3


def test_check_genes_known_lists_each_missing_gene_once_and_truncates():
    with pytest.raises(KeyError) as err:
        check_genes_known(["QQ1", "QQ1"], KNOWN, "x")
    assert err.value.args[0].count("'QQ1'") == 1
    missing = [f"NOPE{i}" for i in range(10)]
    with pytest.raises(KeyError) as err:
        check_genes_known(missing, KNOWN, "x")
    msg = err.value.args[0]
    assert "'NOPE7'" in msg and "'NOPE8'" not in msg and " ..." in msg
