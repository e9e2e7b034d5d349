"""`fastattn viz embeddings`: the PCA against a float64 oracle (the covariance's eigenvectors, with
np.linalg.eigh), its edge cases, the .html and .png maps and the bad inputs (one line, exit 1)."""
import numpy as np
import pytest

from fastattn.cli import main
from fastattn.inference.embedding_map import pca_2d


def pca_oracle(x):
    """The top-2 principal axes from the eigenvectors of the covariance (not the SVD)."""
    c = x - x.mean(axis=0)
    vals, vecs = np.linalg.eigh(c.T @ c)
    order = np.argsort(vals)[::-1][:2]
    return c @ vecs[:, order], vals[order] / vals.sum()


@pytest.mark.parametrize("shape", [(7, 5), (40, 3), (5, 12), (3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pca_matches_the_oracle(rng, shape, dtype):
    x = (rng.standard_normal(shape) * np.arange(1, shape[1] + 1)).astype(dtype)
    coords, explained = pca_2d(x)
    want, want_explained = pca_oracle(x.astype(np.float64))
    for k in range(2):  # the oracle's signs are arbitrary
        sign = np.sign(coords[:, k] @ want[:, k]) or 1
        np.testing.assert_allclose(coords[:, k], sign * want[:, k], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(explained, want_explained, rtol=1e-6)
    # the same map for a permuted copy of the rows, and for non-contiguous input
    perm = rng.permutation(shape[0])
    np.testing.assert_allclose(pca_2d(x[perm])[0], coords[perm], rtol=1e-6, atol=1e-6)
    wide = np.repeat(x, 2, axis=1)[:, ::2]
    np.testing.assert_allclose(pca_2d(wide)[0], coords, rtol=1e-6, atol=1e-6)


def test_edge_cases():
    assert pca_2d(np.ones((1, 4)))[0].tolist() == [[0.0, 0.0]]  # one row
    coords, explained = pca_2d(np.array([[1.0], [3.0], [2.0]]))  # one dimension: PC 2 is 0
    np.testing.assert_allclose(coords, [[-1, 0], [1, 0], [0, 0]], atol=1e-12)
    assert explained.tolist() == [1.0, 0.0]
    coords, explained = pca_2d(np.full((4, 3), 2.5))  # identical rows
    assert not coords.any() and not explained.any()


def test_html_and_png_maps(rng, tmp_path, capsys):
    x = rng.standard_normal((6, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    labels = ["a <b>", "é", "c", "d", "e", "f & g"]
    (tmp_path / "l.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    assert main(["viz", "embeddings", "--input", str(tmp_path / "v.npy"), "--labels", str(tmp_path / "l.txt"),
                 "--out", str(tmp_path / "m.html")]) == 0
    page = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert page.count("<circle") == 6 and "a &lt;b&gt;" in page and "f &amp; g" in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    pytest.importorskip("matplotlib")
    assert main(["viz", "embeddings", "--input", str(tmp_path / "v.npy"), "--out", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input(tmp_path, capsys):
    def error(*argv):
        assert main(["viz", "embeddings", *map(str, argv)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fastattn viz: error: ") and err.count("\n") == 1, err
        return err
    np.save(tmp_path / "v.npy", np.zeros((3, 2)))
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]]))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "junk.npy").write_text("not numpy")
    assert "cannot read" in error("--input", tmp_path / "missing.npy", "--out", tmp_path / "m.html")
    assert "cannot read" in error("--input", tmp_path / "junk.npy", "--out", tmp_path / "m.html")
    assert "cannot read" in error("--input", tmp_path / "obj.npy", "--out", tmp_path / "m.html")
    assert "2-D" in error("--input", tmp_path / "one.npy", "--out", tmp_path / "m.html")
    assert "NaN" in error("--input", tmp_path / "nan.npy", "--out", tmp_path / "m.html")
    assert "has 2 lines: the vectors have 3 rows" in error("--input", tmp_path / "v.npy", "--labels",
                                                          tmp_path / "two.txt", "--out", tmp_path / "m.html")
    assert ".html or .png" in error("--input", tmp_path / "v.npy", "--out", tmp_path / "m.svg")
    assert not (tmp_path / "m.html").exists()
    with pytest.raises(SystemExit) as e:
        main(["viz", "--input", str(tmp_path / "v.npy")])
    assert e.value.code == 2
