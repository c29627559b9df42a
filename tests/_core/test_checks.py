import numpy as np
import pytest

from omicformer._core._checks import check_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_integers_at_or_above_the_minimum_pass_as_int(value):
    out = check_int("n", value)
    assert out == int(value) and type(out) is int


def test_the_minimum_is_the_callers():
    assert check_int("n_bins", 3, minimum=3) == 3
    with pytest.raises(ValueError, match=r"^n_bins=2 must be an integer >= 3\.$"):
        check_int("n_bins", 2, minimum=3)


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, 1.5, "3", None, np.float64(2)])
def test_anything_else_names_the_argument(value):
    with pytest.raises(ValueError, match=r"must be an integer >= 1\.$") as err:
        check_int("k", value)
    assert str(err.value) == f"k={value!r} must be an integer >= 1."


def test_hint_is_appended_in_parentheses():
    with pytest.raises(ValueError, match="smooth_neighbors=0") as err:
        check_int("smooth_neighbors", 0, hint="1: each cell keeps its own prediction")
    assert str(err.value) == (
        "smooth_neighbors=0 must be an integer >= 1 (1: each cell keeps its own prediction)."
    )


@pytest.mark.parametrize("key", [None, "", 5])
def test_public_functions_refuse_a_key_added_that_is_not_a_name(key):
    # each wrote obsm[None], obs["5_split"], ... (None failed later, when the file was written)
    import anndata as ad

    from omicformer import dnabert, scgpt

    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    adata.obs["condition"] = ["ctrl", "ctrl", "0+ctrl"]
    adata.obs["batch"] = ["a", "b", "a"]
    nowhere = "/nonexistent"
    calls = [
        lambda: scgpt.tl.embed(adata, key_added=key, model=nowhere),
        lambda: scgpt.tl.integrate(adata, batch_key="batch", key_added=key, model=nowhere),
        lambda: scgpt.pp.bin_expression(adata, key_added=key),
        lambda: scgpt.pp.prepare_perturbation(adata, key_added=key),
        lambda: dnabert.tl.embed_regions(adata, nowhere, key_added=key),
        lambda: dnabert.tl.predict(adata, nowhere, key_added=key),
    ]
    if key is not None:  # annotate's None is its default, "scgpt_" + label_key
        calls.append(
            lambda: scgpt.tl.annotate(adata, label_key="batch", key_added=key, model=nowhere)
        )
    before = adata.copy()
    for call in calls:
        with pytest.raises(ValueError, match=rf"key_added={key!r} must be a non-empty string"):
            call()
    assert set(adata.obs) == set(before.obs) and not adata.obsm and not adata.layers
    assert not adata.uns
