import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from omicformer import datasets
from omicformer.scgpt import GeneVocab, pp


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    path.write_text(json.dumps(datasets.official_census_vocab()))
    return path


def test_official_census_vocab_specials_appended(census, tmp_path):
    v = GeneVocab.from_file(census)
    assert len(v) == 60_697
    assert (v["A1BG"], v["<pad>"], v["<cls>"], v["<eoc>"]) == (0, 60_694, 60_695, 60_696)
    assert (v.pad_id, v.cls_id) == (60_694, 60_695)
    v.save_json(tmp_path / "out.json")
    again = GeneVocab.from_file(tmp_path / "out.json")
    assert again == v
    assert json.loads((tmp_path / "out.json").read_text())["<eoc>"] == 60_696


def test_lookup_and_match_vocab(census):
    v = GeneVocab.from_file(census)
    np.testing.assert_array_equal(v.lookup(["A1BG", "NOT_A_GENE"]), [0, -1])
    adata = datasets.pbmc68k_reduced()
    pp.match_vocab(adata, v)
    ids = adata.var["id_in_vocab"].to_numpy()
    report = adata.uns["scgpt"]["id_in_vocab"]
    assert {k: report[k] for k in ("n_genes_matched", "n_genes_total")} == {
        "n_genes_matched": int((ids >= 0).sum()),
        "n_genes_total": 765,
    }
    assert report["params"]["gene_key"] is None
    assert 0.9 < (ids >= 0).mean() < 1
    assert ids[list(adata.var_names).index("CD3E")] == v["CD3E"]
    assert report["case_ignored"] is False


def test_match_vocab_finds_symbols_in_a_var_column(census):
    v = GeneVocab.from_file(census)
    adata = datasets.pbmc68k_reduced()
    symbols = adata.var_names.to_numpy()
    adata.var["feature_name"] = symbols
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    with pytest.warns(UserWarning, match=r"var\['feature_name'\] are used") as record:
        pp.match_vocab(adata, v)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(adata.var["id_in_vocab"], v.lookup(symbols))
    assert adata.uns["scgpt"]["id_in_vocab"]["case_ignored"] is False
    assert adata.uns["scgpt"]["id_in_vocab"]["params"]["gene_key"] == "feature_name"


def test_match_vocab_accepts_paths(census, tmp_path):
    from pathlib import Path

    adata = datasets.pbmc68k_reduced()
    GeneVocab.from_file(census).save_json(tmp_path / "vocab.json")
    for vocab in (str(tmp_path / "vocab.json"), Path(tmp_path / "vocab.json")):
        out = pp.match_vocab(adata, vocab, copy=True)
        assert (out.var["id_in_vocab"] >= 0).mean() > 0.9
        assert out.uns["scgpt"]["id_in_vocab"]["params"]["vocab"] == str(tmp_path / "vocab.json")
    with pytest.raises(FileNotFoundError, match=r"no such vocab\.json"):
        pp.match_vocab(adata, tmp_path / "missing.json")
    (tmp_path / "best_model.pt").write_bytes(b"")
    for vocab, what in ((tmp_path / "missing", "no such folder"),
                        (tmp_path / "best_model.pt", "is a file, not a .json")):  # fmt: skip
        with pytest.raises(FileNotFoundError, match=rf"^vocab='[^']*': {what}\. Pass 'default'"):
            pp.match_vocab(adata, vocab)  # the argument is vocab=, not model=
    assert "id_in_vocab" not in adata.var


def test_match_vocab_errors_leave_adata(census):
    v = GeneVocab.from_file(census)
    adata = datasets.pbmc68k_reduced()
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    with pytest.raises(ValueError, match=r"Only 0 of 765 genes.*look like Ensembl IDs.*gene_key"):
        pp.match_vocab(adata, v)
    assert "id_in_vocab" not in adata.var
    # gene_key= naming the Ensembl ids (scanpy's read_10x_mtx keeps them in var["gene_ids"])
    # while var_names hold the symbols: the error names var_names (it advised gene_key= only)
    tenx = datasets.pbmc68k_reduced()
    known = int(np.isin(tenx.var_names, v.genes()).sum())
    tenx.var["gene_ids"] = adata.var_names.to_numpy()
    match = rf"Genes \(var\['gene_ids'\]\) look like .*var_names hold {known} .*gene_key=None\)\."
    with pytest.raises(ValueError, match=match):
        pp.match_vocab(tenx, v, gene_key="gene_ids")
    # no place holds enough: the best one is named with its count
    tenx.var_names = adata.var_names
    tenx.var["few"] = ["CD3E", "LYZ"] + [f"x{i}" for i in range(763)]
    with pytest.raises(ValueError, match=r"best other place, var\['few'\], holds only 2 "):
        pp.match_vocab(tenx, v)
    # symbols of which few are the model's (mouse-style, matched ignoring case): no Ensembl
    # advice, but what was tried and how many genes the model knows
    small = GeneVocab.from_genes(
        ["CD3E", "CD19", "LYZ", "MS4A1", "NKG7"] + [f"G{i}" for i in range(95)]
    )
    mouse = datasets.pbmc68k_reduced()
    mouse.var_names = [n.capitalize() for n in mouse.var_names]
    known = int(np.isin([n.upper() for n in mouse.var_names], small.genes()).sum())
    match = rf"Only {known} of 765 genes .*\(matched ignoring case\)"
    with pytest.raises(ValueError, match=match) as err:
        pp.match_vocab(mouse, small, min_fraction=0.5)
    assert "knows 100 genes" in str(err.value) and "Ensembl" not in str(err.value)
    with pytest.raises(KeyError, match="gene_key='symbol'"):
        pp.match_vocab(adata, v, gene_key="symbol")
    for kwargs, match in (({"key_added": ""}, "key_added='' must be a non-empty string"),
                          ({"min_fraction": -1}, r"min_fraction=-1 must be a number in \[0, 1\]"),
                          ({"min_fraction": 1.5}, "min_fraction=1.5 must be")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            pp.match_vocab(datasets.pbmc68k_reduced(), v, **kwargs)


def test_bad_vocab_files(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="flat JSON object"):
        GeneVocab.from_file(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"A": 0, "B": 2}))
    with pytest.raises(ValueError, match="contiguous"):
        GeneVocab.from_file(tmp_path / "b.json")


@pytest.mark.parametrize(
    ("stoi", "why"),
    [
        ({"A": 0, "B": 0, "C": 1}, "tokens 'A' and 'B' share id 0"),
        ({"A": 0, "B": 2}, "id 1 is not used"),
        ({"A": -1, "B": 0}, "token 'A' has id -1"),
    ],
)
def test_bad_vocab_ids_are_named_with_the_file(tmp_path, stoi, why):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(stoi))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{re.escape(why)}"):
        GeneVocab.from_file(path)


def test_vocab_ids_that_are_not_integers_are_named(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"A": 1.0, "B": "0"}))  # whole numbers: loaded as before
    assert GeneVocab.from_file(path).genes()[:2] == ["B", "A"]
    for bad_id in ["abc", None, 0.7, True, [1]]:  # 0.7 was truncated to 0, True read as 1
        path.write_text(json.dumps({"A": bad_id, "B": 1, "C": 0}))
        with pytest.raises(ValueError, match=r"vocab\.json: token ids must be integers.*'A': "):
            GeneVocab.from_file(path)


def test_small_vocabulary_matches_whole_transcriptome_data():
    """A 20-gene vocabulary on 1,000 genes: 2% of adata's genes but all of the vocabulary's."""
    import anndata as ad

    from omicformer.scgpt._genes import match_genes
    from omicformer.scgpt._vocab import GeneVocab

    genes = [f"GENE{i}" for i in range(1000)]
    adata = ad.AnnData(np.ones((2, 1000), np.float32), var=pd.DataFrame(index=genes))
    ids = match_genes(adata, GeneVocab.from_genes(genes[:20]))
    assert (ids >= 0).sum() == 20
    adata.var_names = [f"ENSG{i:011d}" for i in range(1000)]  # no symbol matches: refused
    with pytest.raises(ValueError, match="Ensembl"):
        match_genes(adata, GeneVocab.from_genes(genes[:20]))


def test_lookup_ignoring_case():
    v = GeneVocab.from_genes(["CD3E", "C1orf112", "Abc", "ABC"])  # "Abc"/"ABC" clash
    genes = ["cd3e", "Cd3e", "C1ORF112", "abc", "ABC", "Abc", "nope", "<PAD>"]
    np.testing.assert_array_equal(v.lookup(genes), [-1, -1, -1, -1, 3, 2, -1, -1])
    np.testing.assert_array_equal(v.lookup(genes, ignore_case=True), [0, 0, 1, -1, 3, 2, -1, -1])


def test_match_vocab_ignores_the_case_of_mouse_style_symbols(census):
    v = GeneVocab.from_file(census)
    adata = datasets.pbmc68k_reduced()
    symbols = adata.var_names.to_numpy()
    adata.var_names = [g[0] + g[1:].lower() for g in symbols]  # "Cd3e", as mouse symbols
    with pytest.warns(UserWarning, match=r"mostly when case is ignored \(\d+ as written") as record:
        pp.match_vocab(adata, v)
    assert record[0].filename == __file__
    np.testing.assert_array_equal(adata.var["id_in_vocab"], v.lookup(symbols))
    assert adata.uns["scgpt"]["id_in_vocab"]["case_ignored"] is True


def test_a_minority_of_symbols_matching_only_ignoring_case_is_said(census):
    v = GeneVocab.from_file(census)
    adata = datasets.pbmc68k_reduced()
    symbols = adata.var_names.to_numpy()
    lower = np.arange(len(symbols)) % 3 == 0  # a third lower-cased: matched as written
    adata.var_names = np.where(lower, np.char.lower(symbols.astype(str)), symbols)
    exact = v.lookup(adata.var_names.to_numpy())
    n_left_out = int(((exact < 0) & (v.lookup(symbols) >= 0)).sum())
    with pytest.warns(UserWarning, match=rf"^{n_left_out} gene symbols of adata.var_names"):
        pp.match_vocab(adata, v)
    np.testing.assert_array_equal(adata.var["id_in_vocab"], exact)  # as the official code
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the symbols as written: no warning
        pp.match_vocab(datasets.pbmc68k_reduced(), v)


def test_case_is_ignored_only_where_most_matches_need_it():
    from omicformer.scgpt._genes import lookup_symbols

    v = GeneVocab.from_genes(["CD3E", "CD4", "MS4A1", "C2orf15"])
    # official symbols and one old-style name: matched as written, as the official code does
    ids, ignored = lookup_symbols(np.array(["CD3E", "CD4", "C2ORF15"]), v)
    assert not ignored
    np.testing.assert_array_equal(ids, [0, 1, -1])
    # mouse-style symbols: one matches as written, three only ignoring case
    ids, ignored = lookup_symbols(np.array(["Cd3e", "Cd4", "Ms4a1", "C2orf15"]), v)
    assert ignored
    np.testing.assert_array_equal(ids, [0, 1, 2, 3])
    # a tie (as many as written as only ignoring case) keeps the symbols as written
    ids, ignored = lookup_symbols(np.array(["CD3E", "Cd4"]), v)
    assert not ignored
    np.testing.assert_array_equal(ids, [0, -1])


def test_from_genes_stores_tokens_as_strings():
    v = GeneVocab.from_genes([1, 2, np.int64(3), "2"])  # "2" repeats 2 as a token
    assert v.genes()[:3] == ["1", "2", "3"] and len(v) == 6
    np.testing.assert_array_equal(v.lookup([1, "2", np.int64(3), 4]), [0, 1, 2, -1])
    assert v == GeneVocab.from_genes(["1", "2", "3"])


def test_a_single_string_is_not_a_list_of_genes():
    v = GeneVocab.from_genes(["A", "B", "C", "ABC"])
    with pytest.raises(TypeError, match=r"single string 'ABC'; wrap it: \[gene\]"):
        v.lookup("ABC")
    with pytest.raises(TypeError, match=r"wrap it: \[gene\]"):
        v.lookup("ABC", ignore_case=True)
    with pytest.raises(TypeError, match=r"wrap it: \[gene\]"):
        GeneVocab.from_genes("ABC")
    np.testing.assert_array_equal(v.lookup(["ABC"]), [3])


def test_match_vocab_refuses_backed_copy_and_backed_view(census, tmp_path):
    import anndata as ad

    v = GeneVocab.from_file(census)
    datasets.pbmc68k_reduced()[:20].write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match="copy=True is not supported for backed AnnData"):
        pp.match_vocab(backed, v, copy=True)
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        pp.match_vocab(backed[:10], v)
    assert "id_in_vocab" not in backed.var
    pp.match_vocab(backed, v)
    assert (backed.var["id_in_vocab"] >= 0).mean() > 0.9
