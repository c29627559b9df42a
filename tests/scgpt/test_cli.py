import anndata as ad
import numpy as np

from omicformer.cli import main


def test_scgpt_embed_cli(tmp_path, official_ckpt, continuous_adata_factory, capsys):
    path, _, _ = official_ckpt
    a = continuous_adata_factory(12)
    a.write_h5ad(tmp_path / "in.h5ad")
    rc = main(["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"),
               "--model", str(path), "--batch-size", "5", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obsm["X_scgpt"].shape == (12, 32)
    np.testing.assert_allclose(np.linalg.norm(out.obsm["X_scgpt"], axis=1), 1, rtol=1e-5)
    assert "obsm['X_scgpt'] (12, 32)" in capsys.readouterr().out
    # backed input gives the same numbers
    main(["scgpt", "embed", str(tmp_path / "in.h5ad"), str(tmp_path / "out2.h5ad"),
          "--model", str(path), "--backed", "--device", "cpu"])  # fmt: skip
    out2 = ad.read_h5ad(tmp_path / "out2.h5ad")
    np.testing.assert_allclose(out2.obsm["X_scgpt"], out.obsm["X_scgpt"], atol=1e-6)
    # (anndata < 0.12 drops None values from uns when writing, so .get)
    assert out2.uns["scgpt"]["X_scgpt"]["params"].get("batch_key") is None
    # --batch-key reaches tl.embed (recorded; a model without batch layers does not need it)
    a.obs["batch"] = ["a", "b"] * 6
    a.write_h5ad(tmp_path / "in_b.h5ad")
    main(["scgpt", "embed", str(tmp_path / "in_b.h5ad"), str(tmp_path / "out3.h5ad"),
          "--model", str(path), "--batch-key", "batch", "--device", "cpu"])  # fmt: skip
    out3 = ad.read_h5ad(tmp_path / "out3.h5ad")
    assert out3.uns["scgpt"]["X_scgpt"]["params"]["batch_key"] == "batch"
    np.testing.assert_allclose(out3.obsm["X_scgpt"], out.obsm["X_scgpt"], atol=1e-6)
